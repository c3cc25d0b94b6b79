/**
 * Builds emu2-tiny's `tokenizer.json` (Hugging Face tokenizers format): a word-level vocabulary
 * expressed as a WordPiece model without sub-word pieces, so any unknown word maps to `[UNK]`.
 * The special tokens are Emu2's (reference/emu2.md §2.1) in Emu2's order, plus the chat roles.
 */
import { TASKS, World } from "./tasks.ts";
import { CELL_PARAPHRASES, DIRECTION_PHRASES, EXTRA_WORDS, NONCE_WORDS, CAPTION_PROMPTS, normaliseText } from "./language.ts";
import { CELLS } from "./scene.ts";

export const SPECIAL_TOKENS = [
  "[UNK]", "<s>", "</s>", "[PAD]", "[IMG]", "[/IMG]", "<image>", "[gIMG]", "[/gIMG]", "[EOC]", "[VIDEO]",
  "<grounding>", "<phrase>", "</phrase>", "<object>", "</object>", "[USER]", "[ASSISTANT]",
] as const;

export const PUNCTUATION = [".", ",", "?", ":", "!", ";"] as const;

/** Every word the world's language can produce, sorted (so the vocabulary is reproducible). */
export function worldWords(samplesPerTask = 4000): string[] {
  const words = new Set<string>([...EXTRA_WORDS, ...NONCE_WORDS, ...CELLS.flatMap((c) => c.split(" "))]);
  const add = (text: string): void => {
    for (const w of normaliseText(text.replace(/<\/?[a-z]+>|\[\/?[A-Za-z]+\]/g, " ")).split(" ")) {
      if (w && !(PUNCTUATION as readonly string[]).includes(w)) words.add(w);
    }
  };
  CELL_PARAPHRASES.flat().forEach(add);
  Object.values(DIRECTION_PHRASES).flat().forEach(add);
  CAPTION_PROMPTS.forEach(add);
  for (const split of ["train", "eval"] as const) {
    const world = new World(split, { scenePoolSize: 500, singlePoolSize: 500 });
    for (const task of TASKS) {
      for (let i = 0; i < samplesPerTask; i++) {
        for (const s of world.example(task, i).segments) if (s.kind === "text") add(s.text);
      }
    }
  }
  return [...words].sort();
}

export interface TokenizerJson {
  version: string;
  added_tokens: { id: number; content: string; single_word: boolean; lstrip: boolean; rstrip: boolean; normalized: boolean; special: boolean }[];
  model: { type: "WordPiece"; unk_token: string; continuing_subword_prefix: string; max_input_chars_per_word: number; vocab: Record<string, number> };
  [key: string]: unknown;
}

export function buildTokenizerJson(words = worldWords()): TokenizerJson {
  const vocab: Record<string, number> = {};
  const all = [...SPECIAL_TOKENS, ...PUNCTUATION, ...words];
  all.forEach((t, i) => {
    if (t in vocab) throw new Error(`duplicate token ${t}`);
    vocab[t] = i;
  });
  return {
    version: "1.0",
    truncation: null,
    padding: null,
    added_tokens: SPECIAL_TOKENS.map((content, id) => ({
      id, content, single_word: false, lstrip: false, rstrip: false, normalized: false, special: true,
    })),
    normalizer: {
      type: "Sequence",
      normalizers: [
        { type: "Lowercase" },
        { type: "Replace", pattern: { String: "centre" }, content: "center" },
        { type: "Replace", pattern: { String: "colour" }, content: "color" },
      ],
    },
    pre_tokenizer: { type: "Whitespace" },
    post_processor: null,
    decoder: { type: "WordPiece", prefix: "##", cleanup: true },
    model: { type: "WordPiece", unk_token: "[UNK]", continuing_subword_prefix: "##", max_input_chars_per_word: 100, vocab },
  };
}
