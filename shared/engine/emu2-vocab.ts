/**
 * Emu2's vocabulary on top of LLaMA's: the added tokens in Emu2's order, so their ids are exactly
 * those of reference/emu2.md §2.1 ([PAD]=32000 … [ASSISTANT]=32273). A real Emu2 export ships a
 * tokenizer.json that already holds them; this builds one from LLaMA's for exports that do not.
 */
export const EMU2_ADDED_TOKENS: readonly string[] = [
  "[PAD]", "[IMG]", "[/IMG]", "<image>", "[gIMG]", "[/gIMG]", "[EOC]", "[VIDEO]", "<grounding>", "<phrase>", "</phrase>",
  "<object>", "</object>", "</delimiter_of_multi_objects/>", "<REC>",
  ...Array.from({ length: 257 }, (_, i) => `<patch_index_${String(i).padStart(4, "0")}>`),
];
/** Emu2-Chat's two extra tokens. */
export const EMU2_CHAT_TOKENS: readonly string[] = ["[USER]", "[ASSISTANT]"];

interface AddedToken { id: number; content: string; special: boolean; [k: string]: unknown }
interface HfTokenizerJson { added_tokens: AddedToken[]; model: { vocab: Record<string, number> } }

/** A copy of a LLaMA tokenizer.json with Emu2's added tokens (and the chat roles when `chat`). */
export function withEmu2Tokens<T extends object>(llama: T, opts: { chat: boolean }): T {
  const json = structuredClone(llama) as unknown as HfTokenizerJson;
  let id = Math.max(Object.keys(json.model.vocab).length, ...json.added_tokens.map((t) => t.id + 1));
  for (const content of opts.chat ? [...EMU2_ADDED_TOKENS, ...EMU2_CHAT_TOKENS] : EMU2_ADDED_TOKENS) {
    if (json.added_tokens.some((t) => t.content === content)) continue;
    json.added_tokens.push({ id: id++, content, single_word: false, lstrip: false, rstrip: false, normalized: false, special: true });
  }
  return json as unknown as T;
}
