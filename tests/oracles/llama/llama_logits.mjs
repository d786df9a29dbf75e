#!/usr/bin/env node
// llama.cpp (via the npm package node-llama-cpp@3.22.1, CPU prebuilt @node-llama-cpp/linux-x64) as an
// independent GGUF-native oracle: evaluates a token sequence with a DeepSeek V4 ("deepseek4") GGUF and
// writes the raw next-token logits at all (or chosen) positions to a float32 .npy [n, vocab].
//
//   node tests/oracles/llama/llama_logits.mjs --model M.gguf --tokens tokens.npy --out logits_llama.npy \
//        [--positions all|0,5,17] [--kv-type F32|F16] [--threads 2] [--batch-size 512] [--context-size N]
//        [--segment 256] [--node-modules DIR]
//
// --tokens: .npy (int32/int64/uint32, 1-D) or a text file of whitespace/comma separated ids.
// --node-modules: directory holding node-llama-cpp and @node-llama-cpp/linux-x64 (default: $DSV4_NODE_MODULES,
//   else <repo>/tests/oracles/.cache/npm/node_modules as installed by scripts/fetch_oracles.sh).
// Writes OUT (.npy) and OUT.json (positions, model, options, timings). Row i of OUT = logits after token
// positions[i] (i.e. the prediction of token positions[i]+1).
//
// GGUF requirements found for llama.cpp's deepseek4 loader (besides ARCH.md §11.2 keys and §11.3 tensors):
//   deepseek4.expert_gating_func = 4 (sqrt-softplus), deepseek4.context_length,
//   deepseek4.rope.scaling.type = "yarn" (else YaRN is off on the compressed layers),
//   tokenizer.ggml.model (e.g. "gpt2") + tokenizer.ggml.tokens + tokenizer.ggml.merges (or model "none"),
//   tokenizer.ggml.pre one that llama.cpp knows (e.g. "joyai-llm") or absent.
// Use F32/F16 weights: on quantized weights llama.cpp's CPU backend also quantizes activations.
import { readFileSync, writeFileSync, existsSync } from "node:fs";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath, pathToFileURL } from "node:url";
import os from "node:os";

const HERE = dirname(fileURLToPath(import.meta.url));
const REPO = resolve(HERE, "..", "..", "..");

function parseArgs(argv) {
  const a = { positions: "all", kvType: "F32", threads: 0, batchSize: 0, contextSize: 0, segment: 256 };
  for (let i = 2; i < argv.length; i++) {
    const k = argv[i];
    const v = () => {
      if (i + 1 >= argv.length) throw new Error(`missing value for ${k}`);
      return argv[++i];
    };
    if (k === "--model") a.model = v();
    else if (k === "--tokens") a.tokens = v();
    else if (k === "--out") a.out = v();
    else if (k === "--positions") a.positions = v();
    else if (k === "--kv-type") a.kvType = v().toUpperCase();
    else if (k === "--threads") a.threads = parseInt(v(), 10);
    else if (k === "--batch-size") a.batchSize = parseInt(v(), 10);
    else if (k === "--context-size") a.contextSize = parseInt(v(), 10);
    else if (k === "--node-modules") a.nodeModules = v();
    else if (k === "--segment") a.segment = Math.max(1, parseInt(v(), 10));
    else if (k === "-h" || k === "--help") { a.help = true; }
    else throw new Error(`unknown argument ${k}`);
  }
  return a;
}

function readNpyHeader(buf) {
  if (buf.readUInt8(0) !== 0x93 || buf.toString("latin1", 1, 6) !== "NUMPY") throw new Error("not a .npy file");
  const major = buf.readUInt8(6);
  const hlen = major === 1 ? buf.readUInt16LE(8) : buf.readUInt32LE(8);
  const hstart = major === 1 ? 10 : 12;
  const header = buf.toString("latin1", hstart, hstart + hlen);
  const descr = /'descr':\s*'([^']+)'/.exec(header)[1];
  const fortran = /'fortran_order':\s*(True|False)/.exec(header)[1] === "True";
  const shape = /'shape':\s*\(([^)]*)\)/.exec(header)[1].split(",").map((s) => s.trim()).filter(Boolean).map(Number);
  return { descr, fortran, shape, offset: hstart + hlen };
}

function readTokens(path) {
  if (path.endsWith(".npy")) {
    const buf = readFileSync(path);
    const h = readNpyHeader(buf);
    const n = h.shape.reduce((x, y) => x * y, 1);
    const out = new Array(n);
    const le = h.descr.startsWith("<") || h.descr.startsWith("|");
    if (!le) throw new Error(`big-endian npy not supported (${h.descr})`);
    const t = h.descr.slice(1);
    for (let i = 0; i < n; i++) {
      if (t === "i4") out[i] = buf.readInt32LE(h.offset + 4 * i);
      else if (t === "u4") out[i] = buf.readUInt32LE(h.offset + 4 * i);
      else if (t === "i8") out[i] = Number(buf.readBigInt64LE(h.offset + 8 * i));
      else if (t === "u8") out[i] = Number(buf.readBigUInt64LE(h.offset + 8 * i));
      else throw new Error(`unsupported token dtype ${h.descr}`);
    }
    return out;
  }
  return readFileSync(path, "utf8").split(/[\s,]+/).filter(Boolean).map((s) => parseInt(s, 10));
}

function writeNpyF32(path, data, shape) {
  let header = `{'descr': '<f4', 'fortran_order': False, 'shape': (${shape.join(", ")}${shape.length === 1 ? "," : ""}), }`;
  const total = 10 + header.length + 1;
  header += " ".repeat((64 - (total % 64)) % 64) + "\n";
  const pre = Buffer.alloc(10);
  pre.writeUInt8(0x93, 0);
  pre.write("NUMPY", 1, "latin1");
  pre.writeUInt8(1, 6);
  pre.writeUInt8(0, 7);
  pre.writeUInt16LE(header.length, 8);
  const body = Buffer.from(data.buffer, data.byteOffset, data.byteLength);
  writeFileSync(path, Buffer.concat([pre, Buffer.from(header, "latin1"), body]));
}

async function main() {
  const a = parseArgs(process.argv);
  if (a.help || !a.model || !a.tokens || !a.out) {
    console.error("usage: node llama_logits.mjs --model M.gguf --tokens T.npy|T.txt --out OUT.npy " +
      "[--positions all|i,j,...] [--kv-type F32|F16] [--threads N] [--batch-size N] [--context-size N] [--segment N] [--node-modules DIR]");
    process.exit(a.help ? 0 : 2);
  }
  const nm = resolve(a.nodeModules || process.env.DSV4_NODE_MODULES || join(REPO, "tests", "oracles", ".cache", "npm", "node_modules"));
  const entry = join(nm, "node-llama-cpp", "dist", "index.js");
  if (!existsSync(entry)) throw new Error(`node-llama-cpp not found at ${entry} (run scripts/fetch_oracles.sh or pass --node-modules)`);
  const pkg = JSON.parse(readFileSync(join(nm, "node-llama-cpp", "package.json"), "utf8"));
  const { getLlama, LlamaLogLevel } = await import(pathToFileURL(entry).href);

  const tokens = readTokens(a.tokens);
  const n = tokens.length;
  const positions = a.positions === "all" ? [...Array(n).keys()]
    : a.positions.split(",").map((s) => parseInt(s, 10)).map((p) => (p < 0 ? n + p : p));
  for (const p of positions) if (!(p >= 0 && p < n)) throw new Error(`position ${p} out of range [0, ${n})`);
  const want = new Set(positions);

  const t0 = Date.now();
  const llama = await getLlama({
    gpu: false, build: "never", usePrebuiltBinaries: true, skipDownload: true, progressLogs: false,
    logLevel: LlamaLogLevel.warn,
  });
  const model = await llama.loadModel({ modelPath: resolve(a.model), gpuLayers: 0 });
  const contextSize = a.contextSize || Math.max(256, n + 16);
  const batchSize = a.batchSize || Math.min(512, contextSize);
  const threads = a.threads || Math.max(1, Math.min(os.cpus().length, 16));
  const context = await model.createContext({
    contextSize, batchSize, sequences: 1, threads, flashAttention: false,
    experimentalKvCacheKeyType: a.kvType, experimentalKvCacheValueType: a.kvType,
    ignoreMemorySafetyChecks: true, failedCreationRemedy: false,
  });
  const seq = context.getSequence();
  const t1 = Date.now();
  // Evaluate in segments (the sequence keeps its state between calls) and convert each segment's logits maps
  // right away: with a large vocabulary, keeping one Map per position for the whole run would not fit in memory.
  const rowOf = new Map(positions.map((p, r) => [p, r]));
  let vocab = 0;
  let out = null;
  for (let s0 = 0; s0 < n; s0 += a.segment) {
    const s1 = Math.min(n, s0 + a.segment);
    const input = [];
    for (let i = s0; i < s1; i++) input.push(want.has(i) ? [tokens[i], { generateNext: { logits: true } }] : tokens[i]);
    const res = await seq.controlledEvaluate(input);
    for (let i = s0; i < s1; i++) {
      if (!want.has(i)) continue;
      const lg = res[i - s0]?.next?.logits;
      if (!lg) throw new Error(`no logits returned for position ${i}`);
      if (out === null) {
        for (const k of lg.keys()) vocab = Math.max(vocab, k + 1);
        out = new Float32Array(positions.length * vocab).fill(Number.NaN);
      }
      const r = rowOf.get(i);
      for (const [tok, v] of lg) {
        if (tok >= vocab) throw new Error(`token id ${tok} >= vocab ${vocab} at position ${i}`);
        out[r * vocab + tok] = v;
      }
    }
  }
  const t2 = Date.now();
  let missing = 0;
  for (let i = 0; i < out.length; i++) if (Number.isNaN(out[i])) missing++;
  writeNpyF32(a.out, out, [positions.length, vocab]);
  const info = {
    model: resolve(a.model), tokens: resolve(a.tokens), n_tokens: n, vocab, positions,
    kv_type: a.kvType, context_size: contextSize, batch_size: batchSize, threads, segment: a.segment,
    node_llama_cpp: pkg.version, llama_cpp_release: (() => {
      try { return JSON.parse(readFileSync(join(nm, "node-llama-cpp", "llama", "llama.cpp.info.json"), "utf8")); } catch { return null; }
    })(),
    missing_logits: missing, load_seconds: (t1 - t0) / 1000, eval_seconds: (t2 - t1) / 1000,
    row_meaning: "row i = next-token logits after tokens[0..positions[i]]",
  };
  writeFileSync(a.out + ".json", JSON.stringify(info, null, 1));
  console.error(`llama_logits: ${positions.length} x ${vocab} logits -> ${a.out} (load ${info.load_seconds}s, eval ${info.eval_seconds}s${missing ? `, ${missing} missing` : ""})`);
  await context.dispose();
  await model.dispose();
  await llama.dispose();
}

main().catch((e) => {
  console.error("llama_logits: error:", e?.stack || e);
  process.exit(1);
});
