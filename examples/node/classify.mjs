#!/usr/bin/env node
// Classify image files with a zoo raw-input bundle (`zoo export NAME --format onnx --raw-inputs`) in Node.js. The
// model does its own preprocessing (resize, crop, scaling, channel statistics) in ONNX operators, so all this file
// does is read manifest.json, decode the images as Pillow does (RGB with alpha dropped, or Pillow's 8-bit luma for
// grayscale models; EXIF orientation not applied) and run onnxruntime-node. No zoo code. JPEGs are decoded by
// libjpeg-turbo compiled to WebAssembly (@cwasm/jpeg-turbo), the library Pillow decodes them with, so the pixels are
// Pillow's; PNGs by pngjs (lossless: every decoder gives the same pixels). Neither needs a native binary.
//
//   npm ci
//   node classify.mjs ../../bundles/clouds-cnn-onnx-raw ../images/sky.jpg [more images] [--top-k 3] [--json]

import crypto from "node:crypto";
import fs from "node:fs";
import path from "node:path";

import jpeg from "@cwasm/jpeg-turbo";
import ort from "onnxruntime-node";
import pngjs from "pngjs";

const MAX_MANIFEST_BYTES = 4 * 1024 * 1024;   // zoo's own bound; the largest manifest it writes is about 40 KB
const MAX_FILE_BYTES = 64 * 1024 * 1024;      // an image file larger than this is refused before it is read
const MAX_PIXELS = 50 * 1000 * 1000;          // and an image larger than this before it is decoded

function fail(message) {
  console.error(`error: ${message}`);
  process.exit(2);
}

function parseArguments(argv) {
  const options = {topK: 3, json: false, files: []};
  for (let i = 0; i < argv.length; i++) {
    if (argv[i] === "--json") options.json = true;
    else if (argv[i] === "--top-k") options.topK = Number(argv[++i]);
    else if (argv[i].startsWith("--")) fail(`unknown option ${argv[i]}; expected --top-k N or --json`);
    else if (options.bundle === undefined) options.bundle = argv[i];
    else options.files.push(argv[i]);
  }
  if (options.bundle === undefined || options.files.length === 0) {
    fail("usage: node classify.mjs BUNDLE IMAGE... [--top-k 3] [--json] (BUNDLE: a folder written by " +
         "zoo export NAME --format onnx --raw-inputs)");
  }
  if (!Number.isInteger(options.topK) || options.topK < 1) fail("--top-k must be a whole number of at least 1");
  return options;
}

function sha256(file) {
  return crypto.createHash("sha256").update(fs.readFileSync(file)).digest("hex");
}

// manifest.json: the graph's image input (uint8, batch x height x width x channels), its labels, and the model
// file's sha256, checked before the file is loaded.
function readManifest(bundle) {
  const file = path.join(bundle, "manifest.json");
  if (!fs.existsSync(file)) fail(`${bundle} is not a bundle: it has no manifest.json`);
  if (fs.statSync(file).size > MAX_MANIFEST_BYTES) fail(`${file} is over ${MAX_MANIFEST_BYTES} bytes: not a zoo manifest`);
  const manifest = JSON.parse(fs.readFileSync(file, "utf8"));
  const raw = manifest.raw_inputs;
  if (!raw) fail(`${bundle} takes model tensors, not raw inputs: export it with zoo export NAME --format onnx --raw-inputs`);
  const images = manifest.inputs.filter((t) => t.dtype === "uint8");
  if (manifest.inputs.length !== 1 || images.length !== 1) {
    fail(`${manifest.model} takes ${manifest.inputs.map((t) => `${t.name} (${t.dtype})`).join(", ")}: this example ` +
         "classifies models whose one input is an image");
  }
  const model = path.join(bundle, manifest.file);
  if (sha256(model) !== manifest.file_sha256) fail(`${model} is not the file manifest.json describes (its sha256 differs)`);
  return {manifest, model, input: images[0], channels: images[0].shape[3]};
}

// --- decoding, as Pillow decodes -----------------------------------------------------------------------------

// The format and the size a PNG's or a JPEG's header declares, read before anything is decoded.
function header(bytes) {
  if (bytes.length >= 24 && bytes.subarray(1, 4).toString("latin1") === "PNG") {
    return {kind: "png", width: bytes.readUInt32BE(16), height: bytes.readUInt32BE(20)};
  }
  if (bytes[0] !== 0xff || bytes[1] !== 0xd8) return {kind: null};
  for (let at = 2; at + 9 <= bytes.length && bytes[at] === 0xff; at += 2 + bytes.readUInt16BE(at + 2)) {
    const marker = bytes[at + 1];
    if (marker >= 0xc0 && marker <= 0xcf && ![0xc4, 0xc8, 0xcc].includes(marker)) {   // a start of frame
      return {kind: "jpeg", height: bytes.readUInt16BE(at + 5), width: bytes.readUInt16BE(at + 7)};
    }
  }
  return {kind: "jpeg", width: 0, height: 0};
}

// An image file -> {width, height, rgba}: 8 bits per channel (16-bit PNGs scaled as Pillow does, v / 257 rounded).
function decode(file) {
  const size = fs.statSync(file).size;
  if (size > MAX_FILE_BYTES) throw new Error(`${size} bytes, over the ${MAX_FILE_BYTES} this example reads`);
  const bytes = fs.readFileSync(file);
  const {kind, width, height} = header(bytes);
  if (kind === null) throw new Error("not a JPEG or PNG file");
  if (width * height > MAX_PIXELS) throw new Error(`${width}x${height} pixels, over ${MAX_PIXELS}`);
  if (kind === "png") {
    const png = pngjs.PNG.sync.read(bytes);
    return {width: png.width, height: png.height, rgba: png.data};
  }
  try {
    const image = jpeg.decode(bytes);
    return {width: image.width, height: image.height, rgba: image.data};
  } catch {
    throw new Error("libjpeg-turbo cannot decode it (corrupt, truncated, or a kind it does not convert to RGB, " +
                    "such as CMYK)");
  }
}

// RGBA -> the model's pixels, uint8 (height, width, channels): RGB with alpha dropped, or Pillow's luma for "L".
function pixels(image, channels) {
  const count = image.width * image.height, out = new Uint8Array(count * channels), rgba = image.rgba;
  for (let i = 0; i < count; i++) {
    const r = rgba[4 * i], g = rgba[4 * i + 1], b = rgba[4 * i + 2];
    if (channels === 1) {
      out[i] = (19595 * r + 38470 * g + 7471 * b + 32768) >>> 16;
    } else {
      out[3 * i] = r; out[3 * i + 1] = g; out[3 * i + 2] = b;
    }
  }
  return out;
}

// --- the model --------------------------------------------------------------------------------------------------

function answer(manifest, results, topK) {
  const probabilities = manifest.raw_inputs.probabilities;
  const out = {};
  if (Object.keys(probabilities).length) {
    for (const [output, graphOutput] of Object.entries(probabilities)) {
      const p = results[graphOutput].data, labels = manifest.labels[output];
      const order = Array.from(p.keys()).sort((a, b) => p[b] - p[a]);
      out[output] = order.slice(0, topK).map((i) => [labels[i], p[i]]);
    }
  } else {
    for (const t of manifest.outputs) out[t.name] = Array.from(results[t.name].data);
  }
  return out;
}

const options = parseArguments(process.argv.slice(2));
const {manifest, model, input, channels} = readManifest(options.bundle);
const session = await ort.InferenceSession.create(model, {executionProviders: ["cpu"]});
const answers = [];
let failed = 0;
for (const file of options.files) {
  let image;
  try {
    image = decode(file);
  } catch (error) {
    console.error(`error: cannot read image ${file}: ${error.message}`);
    failed++;   // exit status 2 at the end, as zoo predict for input it cannot read
    continue;
  }
  const tensor = new ort.Tensor("uint8", pixels(image, channels), [1, image.height, image.width, channels]);
  const outputs = answer(manifest, await session.run({[input.name]: tensor}), options.topK);
  answers.push({file, outputs});
  if (!options.json) {
    const text = Object.values(outputs).map((values) => values.map((v) => Array.isArray(v)
      ? `${v[0]} (${v[1].toFixed(3)})` : String(v)).join(", "));
    console.log(`${file}: ${text.join("; ")}`);
  }
}
if (options.json) console.log(JSON.stringify(answers));
process.exit(failed ? 2 : 0);
