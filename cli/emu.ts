/**
 * `emu` — run any prompt sequence through the model in-process.
 *
 *   emu chat @scene.png "what color is the square?"
 *   emu complete @a.png "dax ." @b.png "wug ." @c.png
 *   emu generate "a red circle at the top left" --out out.png [--seed N --steps N --guidance X --decoder direct]
 *   emu generate @subject.png "the same shape in blue at the bottom" --out out.png
 *   emu generate --box 0.1,0.1,0.5,0.5 "a red circle" --out out.png
 *   emu video "a blue square moving right" --out out.webp      (.gif, or .mp4 with ffmpeg on PATH)
 *
 * Positional arguments form the prompt in order; `@path` is an image; `--box x0,y0,x1,y1` (fractions)
 * attaches a box to the next phrase (grounded generation). Text streams to stdout; progress to stderr.
 */
import { existsSync, readFileSync, renameSync, writeFileSync } from "node:fs";
import { extname, join, resolve } from "node:path";
import { EmuModel } from "../shared/engine/emu-model.ts";
import { encodeImage, encodeVideo, ImageInputError, type ImageFormat, type VideoFormat } from "../shared/engine/image-codec.ts";
import type { Box, ImageSource, PromptPart } from "../shared/engine/sequence.ts";
import { DEFAULT_MODEL_DIR } from "../shared/stage-config.ts";


export const USAGE = `usage: emu <chat|complete|generate|video> [prompt parts…] [options]
  prompt parts   text, @image-path, and --box x0,y0,x1,y1 before a phrase
  --out FILE     output image/video (generate: .png .webp .jpg; video: .webp .gif .mp4)
  --model DIR    model package (default $EMU_MODEL_DIR or the bundled emu2-tiny)
  --max-new-tokens N  --temperature T  --top-k K  --top-p P  --repetition-penalty R  --num-beams B  --stop S
  --seed N  --steps N  --guidance X  --decoder diffusion|direct  --frames N  --fps N
  --json         print a machine-readable result (text, files, seed, per-stage ms)`;

export class UsageError extends Error {}

export interface CliArgs {
  command: "chat" | "complete" | "generate" | "video";
  parts: PromptPart[];
  options: Record<string, string>;
}

const VALUE_OPTIONS = new Set([
  "out", "model", "max-new-tokens", "temperature", "top-k", "top-p", "repetition-penalty", "num-beams", "stop",
  "seed", "steps", "guidance", "decoder", "frames", "fps", "length-penalty",
]);

export function parseArgs(argv: string[], readFile: (p: string) => Uint8Array = (p) => readFileSync(p)): CliArgs {
  const [command, ...rest] = argv;
  if (command !== "chat" && command !== "complete" && command !== "generate" && command !== "video") {
    throw new UsageError(command ? `unknown command "${command}"` : "no command given");
  }
  const parts: PromptPart[] = [];
  const options: Record<string, string> = {};
  let box: Box | null = null;
  for (let i = 0; i < rest.length; i++) {
    const a = rest[i] as string;
    if (a === "--box") {
      const v = rest[++i];
      const nums = (v ?? "").split(",").map(Number);
      if (nums.length !== 4 || nums.some((n) => !Number.isFinite(n))) throw new UsageError(`--box needs x0,y0,x1,y1 (fractions 0–1), got "${v}"`);
      box = nums as Box;
    } else if (a === "--json") {
      options.json = "true";
    } else if (a.startsWith("--")) {
      const name = a.slice(2);
      if (!VALUE_OPTIONS.has(name)) throw new UsageError(`unknown option ${a}`);
      const v = rest[++i];
      if (v === undefined) throw new UsageError(`${a} needs a value`);
      options[name] = v;
    } else if (a.startsWith("@")) {
      let data: Uint8Array;
      try {
        data = readFile(a.slice(1));
      } catch (err) {
        throw new UsageError(`cannot read image ${a.slice(1)}: ${(err as Error).message}`);
      }
      parts.push({ type: "image", image: { kind: "bytes", data } });
    } else {
      parts.push(box ? { type: "text", text: a, box } : a);
      box = null;
    }
  }
  if (box) throw new UsageError("--box must be followed by the phrase it grounds");
  if (parts.length === 0 && command !== "generate") throw new UsageError("give a prompt");
  return { command, parts, options };
}

function num(options: Record<string, string>, name: string): number | undefined {
  const v = options[name];
  if (v === undefined) return undefined;
  const n = Number(v);
  if (!Number.isFinite(n)) throw new UsageError(`--${name} must be a number, got "${v}"`);
  return n;
}

/** Progress on stderr: a bar when stderr is a terminal, nothing otherwise (logs stay clean). */
function progress(err: NodeJS.WriteStream, label: string): (step: number, total: number) => void {
  if (!err.isTTY) return () => undefined;
  return (step, total) => {
    const width = 30;
    const done = Math.round((width * step) / Math.max(1, total));
    err.write(`\r${label} [${"#".repeat(done)}${" ".repeat(width - done)}] ${step}/${total}${step >= total ? "\n" : ""}`);
  };
}

export async function run(argv: string[], io: { out: NodeJS.WritableStream; err: NodeJS.WriteStream } = { out: process.stdout, err: process.stderr }, signal?: AbortSignal): Promise<void> {
  const args = parseArgs(argv);
  const o = args.options;
  const json = o.json === "true";
  const modelDir = resolve(o.model ?? process.env.EMU_MODEL_DIR ?? DEFAULT_MODEL_DIR);
  if (!existsSync(join(modelDir, "manifest.json"))) throw new UsageError(`no model package at ${modelDir} (manifest.json missing); pass --model DIR`);
  const t0 = Date.now();
  const model = await EmuModel.load(modelDir);
  const ms: Record<string, number> = { load_ms: Date.now() - t0 };
  const seed = num(o, "seed") ?? 0;
  try {
    const encoder = model.encoder!;
    const reasoner = model.reasoner!;
    const decoder = model.decoder!;
    const timed = async <T>(name: string, f: () => Promise<T>): Promise<T> => {
      const t = Date.now();
      try {
        return await f();
      } finally {
        ms[name] = Date.now() - t;
      }
    };
    const encode = async (seq: { images: ImageSource[] }) => {
      try {
        return await timed("encode_ms", () => encoder.encode(seq.images));
      } catch (err) {
        if (err instanceof ImageInputError) throw new UsageError(err.message);
        throw err;
      }
    };
    if (args.command === "chat" || args.command === "complete") {
      const seq = model.builder.build(args.command === "chat" ? "chat" : "complete", args.parts);
      const images = await encode(seq);
      let printed = 0;
      const maxNew = num(o, "max-new-tokens") ?? model.manifest.generation.max_new_tokens;
      const bar = progress(io.err, "tokens");
      let n = 0;
      const r = await timed("reason_ms", () => reasoner.generate({
        sequence: seq, images, mode: "text", signal,
        text: {
          maxNewTokens: num(o, "max-new-tokens"), temperature: num(o, "temperature"), topK: num(o, "top-k"), topP: num(o, "top-p"),
          repetitionPenalty: num(o, "repetition-penalty"), numBeams: num(o, "num-beams"), lengthPenalty: num(o, "length-penalty"),
          seed, stop: o.stop ? [o.stop] : [],
        },
        onToken: (_t, text) => {
          bar(++n, maxNew);
          if (json) return;
          if (text.length > printed) { io.out.write(text.slice(printed)); printed = text.length; }
        },
      }));
      if (io.err.isTTY && n < maxNew) io.err.write("\n");
      if (json) {
        io.out.write(JSON.stringify({ text: r.text, finish_reason: r.finishReason, tokens_in: r.usage.promptTokens, tokens_out: r.usage.completionTokens, seed, ...ms }) + "\n");
        return;
      }
      if (r.text.length > printed) io.out.write(r.text.slice(printed));
      io.out.write("\n");
      return;
    }
    const out = o.out ?? (args.command === "video" ? "out.webp" : "out.png");
    const ext = extname(out).slice(1).toLowerCase().replace("jpg", "jpeg");
    const frames = args.command === "video" ? (num(o, "frames") ?? model.manifest.video.frames) : 1;
    if (args.command === "video" && !["webp", "gif", "mp4"].includes(ext)) throw new UsageError("video --out must end in .webp, .gif or .mp4");
    if (args.command === "generate" && !["png", "webp", "jpeg"].includes(ext)) throw new UsageError("generate --out must end in .png, .webp or .jpg");
    if (o.decoder) {
      try {
        decoder.config(o.decoder);
      } catch (err) {
        throw new UsageError((err as Error).message);
      }
    }
    const seq = model.builder.build(args.command === "video" ? "video" : "image", args.parts);
    const images = await encode(seq);
    const regressBar = progress(io.err, "regress");
    const r = await timed("reason_ms", () => reasoner.generate({ sequence: seq, images, mode: args.command === "video" ? "video" : "image", frames, signal, onVisual: (i) => regressBar(i + 1, frames) }));
    const negative = await reasoner.unconditional();
    const pics = await timed("decode_ms", () => decoder.decode({
      embeddings: r.visual, count: frames, negative, decoder: o.decoder, steps: num(o, "steps"), guidanceScale: num(o, "guidance"),
      seed, signal, onProgress: progress(io.err, "decode"),
    }));
    const bytes = await timed("encode_output_ms", () => (args.command === "video"
      ? encodeVideo(pics, num(o, "fps") ?? model.manifest.video.fps, ext as VideoFormat)
      : encodeImage(pics[0]!, ext as ImageFormat)));
    // Write beside the target and rename: a crash or Ctrl-C never leaves a half-written file at --out.
    const tmp = `${out}.partial-${process.pid}`;
    writeFileSync(tmp, bytes);
    renameSync(tmp, out);
    const info = { file: out, width: pics[0]!.width, height: pics[0]!.height, frames, bytes: bytes.length, decoder: o.decoder ?? decoder.defaultDecoder, seed, ...ms };
    io.out.write(json ? JSON.stringify(info) + "\n" : `${out} (${info.width}×${info.height}${frames > 1 ? `, ${frames} frames` : ""}, ${bytes.length} bytes)\n`);
  } finally {
    await model.close();
  }
}
