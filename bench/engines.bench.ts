/**
 * `npm run bench`: engine speed on this machine, as ratios against baselines measured in the same run.
 *   - KV-cached decoding vs recomputing the whole prefix for each of 128 new tokens (target ≥ 5×)
 *   - encoder and UNet throughput at batch 8 vs batch 1, and ms per generated token
 *   - end-to-end in-process latency per task (the baseline the serving stack is compared with)
 */
import { join } from "node:path";
import { EmuModel } from "../shared/engine/emu-model.ts";
import type { RgbImage } from "../shared/engine/image-codec.ts";
import { argmax } from "../shared/engine/sampling.ts";
import { renderScene } from "../models/world/render.ts";
import { World } from "../models/world/tasks.ts";

const model = await EmuModel.load(join(import.meta.dirname, "../models/emu2-tiny"));
const m = model.manifest;
const lm = model.reasoner!.lm;
const { hidden, vocab } = lm.shape;
const now = (): number => performance.now();

async function median(runs: number, f: () => Promise<unknown>): Promise<number> {
  await f();
  const t: number[] = [];
  for (let i = 0; i < runs; i++) { const s = now(); await f(); t.push(now() - s); }
  return t.sort((a, b) => a - b)[Math.floor(runs / 2)] as number;
}

// 1. KV cache vs recompute, 128 new tokens (greedy, stops ignored so both do the same work).
const prompt = model.builder.build("complete", ["a large red circle at the top left and a small blue square at the bottom , on a black background ."]).ids;
const NEW = 128;
async function cached(): Promise<number[]> {
  const ids = [...prompt];
  let out = await lm.forward(await lm.embed([ids]), 1, ids.length, [ids.map(() => 1)], [ids.map((_, i) => i)], lm.emptyCache(1));
  let past = out.present;
  for (let k = 0; k < NEW; k++) {
    const tok = argmax(out.logits.subarray((out.logits.length / vocab - 1) * vocab));
    ids.push(tok);
    out = await lm.forward(await lm.embed([[tok]]), 1, 1, [ids.map(() => 1)], [[ids.length - 1]], past);
    past = out.present;
  }
  return ids;
}
async function recompute(): Promise<number[]> {
  const ids = [...prompt];
  for (let k = 0; k < NEW; k++) {
    const out = await lm.forward(await lm.embed([ids]), 1, ids.length, [ids.map(() => 1)], [ids.map((_, i) => i)], lm.emptyCache(1));
    ids.push(argmax(out.logits.subarray((ids.length - 1) * vocab, ids.length * vocab)));
  }
  return ids;
}
const same = JSON.stringify(await cached()) === JSON.stringify(await recompute());
const tCached = await median(5, cached);
const tRecompute = await median(3, recompute);
console.log(`KV cache: ${NEW} tokens in ${tCached.toFixed(1)} ms cached vs ${tRecompute.toFixed(1)} ms recomputed → ${(tRecompute / tCached).toFixed(1)}× (target ≥ 5×; same tokens: ${same})`);
console.log(`  ${(tCached / NEW).toFixed(3)} ms per generated token (batch 1, hidden ${hidden})`);

// 2. Encoder and UNet throughput, batch 8 vs batch 1.
const world = new World("eval");
const [w, h] = m.encoder.image_size;
const images: RgbImage[] = Array.from({ length: 8 }, (_, i) => ({ width: w, height: h, data: renderScene(world.poolScene("scenes", i)) }));
const enc1 = await median(5, async () => { for (const im of images) await model.encoder!.encodePrepared([im]); });
const enc8 = await median(5, () => model.encoder!.encodePrepared(images));
console.log(`encoder: ${(8000 / enc1).toFixed(0)} img/s at batch 1, ${(8000 / enc8).toFixed(0)} img/s at batch 8 → ${(enc1 / enc8).toFixed(1)}×`);
const neg = await model.reasoner!.unconditional();
const emb8 = new Float32Array(8 * neg.length);
for (let i = 0; i < 8; i++) emb8.set(neg, i * neg.length);
const STEPS = 5;
const unet1 = await median(3, async () => { for (let i = 0; i < 8; i++) await model.decoder!.decode({ embeddings: neg, count: 1, negative: neg, decoder: "diffusion", steps: STEPS }); });
const unet8 = await median(3, () => model.decoder!.decode({ embeddings: emb8, count: 8, negative: neg, decoder: "diffusion", steps: STEPS }));
console.log(`diffusion (${STEPS} steps, guidance on): ${(8000 / unet1).toFixed(1)} img/s at batch 1, ${(8000 / unet8).toFixed(1)} img/s at batch 8 → ${(unet1 / unet8).toFixed(1)}×`);

// 3. End-to-end in-process latency per task.
const png = images[0]!;
const e = model.encoder!;
const r = model.reasoner!;
const d = model.decoder!;
const chat = await median(5, async () => {
  const seq = model.builder.build("chat", [{ type: "image", image: { kind: "box-mask", box: [0, 0, 1, 1] } }, "what color is the circle ?"]);
  const emb = await e.encodePrepared([png]);
  await r.generate({ sequence: seq, images: emb, mode: "text" });
});
const gen = async (decoder: string, frames = 1): Promise<number> => median(3, async () => {
  const seq = model.builder.build(frames > 1 ? "video" : "image", [frames > 1 ? "a blue square moving right" : "a red circle at the top left"]);
  const out = await r.generate({ sequence: seq, images: await e.encode(seq.images), mode: frames > 1 ? "video" : "image", frames });
  await d.decode({ embeddings: out.visual, count: frames, negative: neg, decoder });
});
const genDirect = await gen("direct");
const genDiffusion = await gen("diffusion");
const video = await gen(m.decoders.default, m.video.frames);
console.log(`end to end, in process: chat ${chat.toFixed(1)} ms · generate ${genDirect.toFixed(1)} ms (direct) / ${genDiffusion.toFixed(1)} ms (diffusion, ${(d.config("diffusion") as { default_steps: number }).default_steps} steps) · video ${video.toFixed(1)} ms (${m.video.frames} frames, ${m.decoders.default})`);
await model.close();
