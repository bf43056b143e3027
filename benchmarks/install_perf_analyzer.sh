#!/bin/sh
# Installs Triton's load generator, perf_analyzer 2.51, into DIR (not into any Python environment), for
# benchmarks/serve_perf.py: DIR/perf_analyzer runs it with the libraries it needs.
#
#   sh benchmarks/install_perf_analyzer.sh DIR [PIP]      # PIP: a pip to download with (default: pip3)
#
# The PyPI package `perf-analyzer` is an empty placeholder; the binary ships inside the manylinux wheel of
# tritonclient 2.51.0 (bin/perf_analyzer). It links libb64.so.0d (Debian/Ubuntu: libb64-0d, installed here
# with apt-get when run as root) and libcudart.so.12 (the pip package nvidia-cuda-runtime-cu12, installed
# into DIR/cudart; no GPU is needed to run it).
set -eu
DIR=${1:?usage: install_perf_analyzer.sh DIR [PIP]}
PIP=${2:-pip3}
mkdir -p "$DIR"
DIR=$(cd "$DIR" && pwd)
"$PIP" download --no-deps --only-binary=:all: --platform manylinux1_x86_64 -d "$DIR/wheel" tritonclient==2.51.0
python3 -c "import sys, zipfile; zipfile.ZipFile(sys.argv[1]).extractall(sys.argv[2])" \
    "$DIR"/wheel/tritonclient-2.51.0-*.whl "$DIR/wheel/unpacked"
BINARY="$DIR/wheel/unpacked/tritonclient-2.51.0.data/data/bin/perf_analyzer"
chmod +x "$BINARY"
"$PIP" install --target "$DIR/cudart" nvidia-cuda-runtime-cu12
if ! ldconfig -p | grep -q libb64.so.0d; then
    if [ "$(id -u)" = 0 ]; then apt-get install -y libb64-0d; else
        echo "libb64.so.0d is missing: sudo apt-get install libb64-0d" >&2; exit 1; fi
fi
CUDART=$(dirname "$(find "$DIR/cudart" -name 'libcudart.so.12' | head -1)")
cat > "$DIR/perf_analyzer" <<WRAPPER
#!/bin/sh
exec env LD_LIBRARY_PATH="$CUDART\${LD_LIBRARY_PATH:+:\$LD_LIBRARY_PATH}" "$BINARY" "\$@"
WRAPPER
chmod +x "$DIR/perf_analyzer"
"$DIR/perf_analyzer" --version
echo "installed $DIR/perf_analyzer"
