"""What a cold start pays: a fresh interpreter imports zoo.runtime, loads a bundle and classifies one image."""

import sys

import zoo.runtime

print(zoo.runtime.load(sys.argv[1]).classify(sys.argv[2], top_k=1)[0])
