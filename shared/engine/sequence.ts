/**
 * Builds Emu2 sequences from prompt parts, following Emu2's rules (reference/emu2.md §2):
 * images become `[IMG]` + N×`<image>` + `[/IMG]` (their embeddings are spliced through project_up),
 * chat wraps turns in the manifest's template, few-shot prompts are plain concatenation, a phrase with
 * a box becomes `<phrase>…</phrase><object>[box-mask image]</object>` after a leading `<grounding>`,
 * and generation appends `[IMG]` (image) or `[VIDEO]` (video) for the regression to continue.
 * Every token id comes from the tokenizer and the manifest, never from literals.
 */
import type { Manifest } from "./model-package.ts";
import type { EmuTokenizer } from "./tokenizer.ts";

export type Box = [number, number, number, number];

/** An image the encoder will embed: encoded bytes, or a box to draw as Emu2's grounding mask. */
export type ImageSource = { kind: "bytes"; data: Uint8Array } | { kind: "box-mask"; box: Box };

export type PromptPart =
  | string
  | { type: "text"; text: string; box?: Box }
  | { type: "image"; image: ImageSource };

export interface ChatMessage {
  role: "user" | "assistant";
  content: PromptPart[];
}

/** A built sequence: token ids, with `images[k]` filling the k-th run of image slots. */
export interface Sequence {
  ids: number[];
  images: ImageSource[];
}

export class SequenceError extends Error {
  readonly code = "invalid_prompt";
}

export type SequenceMode = "complete" | "chat" | "image" | "video";

export class SequenceBuilder {
  private readonly special: Manifest["tokenizer"]["special"];
  private readonly chat: Manifest["tokenizer"]["chat"];
  readonly tokensPerImage: number;
  readonly ids: {
    bos: number; eos: number; pad: number; imgStart: number; imgEnd: number; image: number; frame: number;
    video: number; grounding: number; phraseStart: number; phraseEnd: number; objectStart: number; objectEnd: number;
  };

  constructor(private readonly tokenizer: EmuTokenizer, manifest: Manifest) {
    this.special = manifest.tokenizer.special;
    this.chat = manifest.tokenizer.chat;
    this.tokensPerImage = manifest.encoder.tokens_per_image;
    const s = this.special;
    this.ids = {
      bos: tokenizer.id(s.bos), eos: tokenizer.id(s.eos), pad: tokenizer.id(s.pad), imgStart: tokenizer.id(s.img_start),
      imgEnd: tokenizer.id(s.img_end), image: tokenizer.id(s.image), frame: tokenizer.id(s.frame), video: tokenizer.id(s.video),
      grounding: tokenizer.id(s.grounding), phraseStart: tokenizer.id(s.phrase_start), phraseEnd: tokenizer.id(s.phrase_end),
      objectStart: tokenizer.id(s.object_start), objectEnd: tokenizer.id(s.object_end),
    };
  }

  /** `[IMG] <image>×N [/IMG]` */
  imageSlots(): number[] {
    return [this.ids.imgStart, ...new Array<number>(this.tokensPerImage).fill(this.ids.image), this.ids.imgEnd];
  }

  private parts(parts: PromptPart[], out: Sequence): void {
    for (const part of parts) {
      if (typeof part === "string") {
        out.ids.push(...this.text(part));
      } else if (part.type === "text") {
        if (part.box) {
          validateBox(part.box);
          out.ids.push(this.ids.phraseStart, ...this.text(part.text), this.ids.phraseEnd, this.ids.objectStart);
          out.ids.push(...this.imageSlots(), this.ids.objectEnd);
          out.images.push({ kind: "box-mask", box: part.box });
        } else {
          out.ids.push(...this.text(part.text));
        }
      } else {
        out.ids.push(...this.imageSlots());
        out.images.push(part.image);
      }
    }
  }

  private text(t: string): number[] {
    return this.tokenizer.encode(t);
  }

  private hasBox(parts: PromptPart[]): boolean {
    return parts.some((p) => typeof p !== "string" && p.type === "text" && !!p.box);
  }

  /**
   * The sequence for a request. `complete` continues the parts exactly as given (base-model style,
   * how few-shot prompts run); `chat` applies the manifest's chat template (single user turn, or
   * `messages`); `image` and `video` end with `[IMG]` / `[VIDEO]` for the regression to continue.
   */
  build(mode: SequenceMode, input: PromptPart[] | ChatMessage[]): Sequence {
    const out: Sequence = { ids: [this.ids.bos], images: [] };
    if (mode === "chat") {
      const messages = isMessages(input) ? input : [{ role: "user" as const, content: input as PromptPart[] }];
      if (messages.length === 0 || messages[messages.length - 1]?.role !== "user") {
        throw new SequenceError("chat needs at least one message and must end with a user message");
      }
      if (this.chat.system) out.ids.push(...this.text(this.chat.system));
      for (const m of messages) {
        const template = m.role === "user" ? this.chat.user : this.chat.assistant;
        const [before, after] = splitTemplate(template);
        out.ids.push(...this.text(before));
        this.parts(m.content, out);
        out.ids.push(...this.text(after));
        if (m.role === "assistant") out.ids.push(...this.text(this.chat.turn_end));
      }
      out.ids.push(...this.text(this.chat.generation_prompt));
      return out;
    }
    if (isMessages(input)) throw new SequenceError(`messages are only accepted by chat, not ${mode}`);
    if (this.hasBox(input)) out.ids.push(this.ids.grounding);
    this.parts(input, out);
    if (mode === "image") out.ids.push(this.ids.imgStart);
    if (mode === "video") out.ids.push(this.ids.video);
    return out;
  }

  /** Checks that image slot runs and images agree (they always do when built here). */
  check(seq: Sequence): void {
    const slots = seq.ids.filter((t) => t === this.ids.image || t === this.ids.frame).length;
    if (slots !== seq.images.length * this.tokensPerImage) {
      throw new SequenceError(`the sequence has ${slots} image slots but ${seq.images.length} images × ${this.tokensPerImage} tokens`);
    }
  }
}

function isMessages(input: PromptPart[] | ChatMessage[]): input is ChatMessage[] {
  return input.length > 0 && typeof input[0] === "object" && input[0] !== null && "role" in input[0];
}

function splitTemplate(template: string): [string, string] {
  const i = template.indexOf("{text}");
  if (i < 0) return [template, ""];
  return [template.slice(0, i), template.slice(i + "{text}".length)];
}

export function validateBox(box: Box): void {
  const [x0, y0, x1, y1] = box;
  if (!box.every((v) => Number.isFinite(v) && v >= 0 && v <= 1) || !(x0 < x1 && y0 < y1)) {
    throw new SequenceError(`box [${box.join(", ")}] must be x0,y0,x1,y1 fractions in 0–1 with x0 < x1 and y0 < y1`);
  }
}
