/**
 * The one tokenizer of the project: reads a Hugging Face `tokenizer.json` through a maintained
 * library (@huggingface/tokenizers). Sequence templates and special-token ids are looked up here,
 * never written as numbers elsewhere.
 */
import { Tokenizer } from "@huggingface/tokenizers";

export class TokenizerError extends Error {
  readonly code = "tokenizer_invalid";
}

export class EmuTokenizer {
  private readonly inner: Tokenizer;
  private readonly vocab: Map<string, number>;
  readonly vocabSize: number;

  constructor(tokenizerJson: object, tokenizerConfig: object = {}) {
    this.inner = new Tokenizer(tokenizerJson, tokenizerConfig);
    this.vocab = new Map(this.inner.get_vocab(true));
    this.vocabSize = Math.max(...this.vocab.values()) + 1;
  }

  /** Token ids of `text`; special tokens written in the text ("[USER]:") are recognised; nothing is added. */
  encode(text: string): number[] {
    return this.inner.encode(text, { add_special_tokens: false }).ids;
  }

  decode(ids: readonly number[], opts: { skipSpecialTokens?: boolean } = {}): string {
    return this.inner.decode([...ids], { skip_special_tokens: opts.skipSpecialTokens ?? true });
  }

  /** Id of a token that must exist (special tokens named by the manifest). */
  id(token: string): number {
    const id = this.vocab.get(token);
    if (id === undefined) throw new TokenizerError(`token ${JSON.stringify(token)} is not in the tokenizer's vocabulary`);
    return id;
  }

  token(id: number): string | undefined {
    return this.inner.id_to_token(id);
  }
}
