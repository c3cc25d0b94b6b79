/**
 * The LM's graphs (embed_tokens, project_up, decoder_model_merged, and image_summary where the
 * manifest declares one) behind one typed API, and
 * the KV cache as plain arrays: [batch, heads, length, head_dim] per layer for keys and values.
 * Rows can be gathered (beam search, finished rows leaving) and batches merged (continuous batching:
 * both caches are left-padded to a common length; the attention mask hides the padding).
 */
import type { Manifest } from "./model-package.ts";
import type { Graph, HostTensor } from "./onnx-session.adapter.ts";

export interface KvCache {
  batch: number;
  length: number;
  keys: Float32Array[];
  values: Float32Array[];
}

export interface LmShape {
  layers: number;
  heads: number;
  headDim: number;
  hidden: number;
  vocab: number;
  dim: number;
}

export interface ForwardResult {
  /** [B, T, V] */
  logits: Float32Array;
  /** [B, T, D] — project_down of the final hidden state: the next visual embedding. */
  visual: Float32Array;
  present: KvCache;
}

export interface LanguageModelGraphs {
  embedTokens: Graph;
  projectUp: Graph;
  decoder: Graph;
  /** Present when the model adds an image summary at each `[/IMG]` (manifest `lm.image_summary`). */
  imageSummary?: Graph;
}

export class LanguageModel {
  readonly shape: LmShape;

  constructor(private readonly graphs: LanguageModelGraphs, manifest: Manifest) {
    const lm = manifest.lm;
    this.shape = { layers: lm.layers, heads: lm.heads, headDim: lm.head_dim, hidden: lm.hidden, vocab: lm.vocab, dim: manifest.encoder.dim };
  }

  emptyCache(batch: number): KvCache {
    const z = (): Float32Array => new Float32Array(0);
    return { batch, length: 0, keys: Array.from({ length: this.shape.layers }, z), values: Array.from({ length: this.shape.layers }, z) };
  }

  /** Embeddings of token ids, one row of equal length per sequence → [B, T, H]. */
  async embed(ids: number[][]): Promise<Float32Array> {
    const b = ids.length;
    const t = ids[0]?.length ?? 0;
    if (b === 0 || t === 0) return new Float32Array(0);
    const data = new BigInt64Array(b * t);
    ids.forEach((row, r) => row.forEach((id, i) => { data[r * t + i] = BigInt(id); }));
    const out = await this.graphs.embedTokens.run({ input_ids: { dtype: "int64", dims: [b, t], data } });
    return (out.inputs_embeds as HostTensor).data as Float32Array;
  }

  /** project_up of `count` visual embeddings (count × D) → count × H. */
  async projectUp(visual: Float32Array, count: number): Promise<Float32Array> {
    if (count === 0) return new Float32Array(0);
    const out = await this.graphs.projectUp.run({ visual_embeds: { dtype: "float32", dims: [1, count, this.shape.dim], data: visual } });
    return (out.inputs_embeds as HostTensor).data as Float32Array;
  }

  /**
   * image_summary of `images` images of `tokens` visual embeddings each (images × tokens × D) →
   * images × H, to add to the embedding of each image's closing `[/IMG]`. Empty when the model
   * declares no summary (Emu2's own layout).
   */
  async summarize(visual: Float32Array, images: number, tokens: number): Promise<Float32Array> {
    if (!this.graphs.imageSummary || images === 0) return new Float32Array(0);
    const out = await this.graphs.imageSummary.run({ visual_embeds: { dtype: "float32", dims: [images, tokens, this.shape.dim], data: visual } });
    return (out.image_summary as HostTensor).data as Float32Array;
  }

  /**
   * One decoder call. `embeds` [B, T, H]; `mask` [B, P + T] (1 = real token); `positions` [B, T];
   * `past` of length P (0 on the first call).
   */
  async forward(embeds: Float32Array, b: number, t: number, mask: number[][], positions: number[][], past: KvCache): Promise<ForwardResult> {
    const { layers, heads, headDim, hidden } = this.shape;
    const total = past.length + t;
    const maskData = new BigInt64Array(b * total);
    mask.forEach((row, r) => row.forEach((m, i) => { maskData[r * total + i] = BigInt(m); }));
    const posData = new BigInt64Array(b * t);
    positions.forEach((row, r) => row.forEach((p, i) => { posData[r * t + i] = BigInt(p); }));
    const feeds: Record<string, HostTensor> = {
      inputs_embeds: { dtype: "float32", dims: [b, t, hidden], data: embeds },
      attention_mask: { dtype: "int64", dims: [b, total], data: maskData },
      position_ids: { dtype: "int64", dims: [b, t], data: posData },
    };
    for (let i = 0; i < layers; i++) {
      feeds[`past_key_values.${i}.key`] = { dtype: "float32", dims: [b, heads, past.length, headDim], data: past.keys[i] as Float32Array };
      feeds[`past_key_values.${i}.value`] = { dtype: "float32", dims: [b, heads, past.length, headDim], data: past.values[i] as Float32Array };
    }
    const out = await this.graphs.decoder.run(feeds);
    const present: KvCache = { batch: b, length: total, keys: [], values: [] };
    for (let i = 0; i < layers; i++) {
      present.keys.push((out[`present.${i}.key`] as HostTensor).data as Float32Array);
      present.values.push((out[`present.${i}.value`] as HostTensor).data as Float32Array);
    }
    return { logits: (out.logits as HostTensor).data as Float32Array, visual: (out.visual_embeds as HostTensor).data as Float32Array, present };
  }

  /** The rows of a cache in the given order (rows may repeat: beams). */
  gatherRows(cache: KvCache, rows: number[]): KvCache {
    const rowSize = this.shape.heads * cache.length * this.shape.headDim;
    const pick = (src: Float32Array): Float32Array => {
      const dst = new Float32Array(rows.length * rowSize);
      rows.forEach((r, i) => dst.set(src.subarray(r * rowSize, (r + 1) * rowSize), i * rowSize));
      return dst;
    };
    return { batch: rows.length, length: cache.length, keys: cache.keys.map(pick), values: cache.values.map(pick) };
  }

  /** Left-pads a cache to `length` positions (padding is hidden by the attention mask). */
  padLeft(cache: KvCache, length: number): KvCache {
    if (length === cache.length) return cache;
    const { heads, headDim } = this.shape;
    const pad = length - cache.length;
    const grow = (src: Float32Array): Float32Array => {
      const dst = new Float32Array(cache.batch * heads * length * headDim);
      for (let bh = 0; bh < cache.batch * heads; bh++) {
        dst.set(src.subarray(bh * cache.length * headDim, (bh + 1) * cache.length * headDim), (bh * length + pad) * headDim);
      }
      return dst;
    };
    return { batch: cache.batch, length, keys: cache.keys.map(grow), values: cache.values.map(grow) };
  }

  /** Rows of `a` then rows of `b`, both left-padded to the longer length. */
  concatRows(a: KvCache, b: KvCache): KvCache {
    if (a.batch === 0) return b;
    if (b.batch === 0) return a;
    const length = Math.max(a.length, b.length);
    const pa = this.padLeft(a, length);
    const pb = this.padLeft(b, length);
    const cat = (x: Float32Array, y: Float32Array): Float32Array => {
      const dst = new Float32Array(x.length + y.length);
      dst.set(x);
      dst.set(y, x.length);
      return dst;
    };
    return { batch: a.batch + b.batch, length, keys: pa.keys.map((k, i) => cat(k, pb.keys[i] as Float32Array)), values: pa.values.map((v, i) => cat(v, pb.values[i] as Float32Array)) };
  }
}
