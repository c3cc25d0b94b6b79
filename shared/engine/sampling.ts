/**
 * Next-token choice from logits: greedy, or temperature / top-k / top-p sampling with a seeded
 * generator, after Hugging Face's repetition penalty (positive logits divided, negative multiplied).
 */
import type { Rng } from "./random.ts";

export interface SamplingParams {
  /** 0 = greedy. Default 0. */
  temperature: number;
  /** 0 = off. Default 0. */
  topK: number;
  /** 1 = off. Default 1. */
  topP: number;
  /** 1 = off. Default 1. */
  repetitionPenalty: number;
}

export const DEFAULT_SAMPLING: SamplingParams = { temperature: 0, topK: 0, topP: 1, repetitionPenalty: 1 };

export function applyRepetitionPenalty(logits: Float32Array, seen: Iterable<number>, penalty: number): void {
  if (penalty === 1) return;
  for (const id of new Set(seen)) {
    const v = logits[id] as number;
    logits[id] = v > 0 ? v / penalty : v * penalty;
  }
}

export function argmax(logits: Float32Array): number {
  let best = 0;
  for (let i = 1; i < logits.length; i++) if ((logits[i] as number) > (logits[best] as number)) best = i;
  return best;
}

export function logSoftmax(logits: Float32Array): Float32Array {
  let max = -Infinity;
  for (const v of logits) max = Math.max(max, v);
  let sum = 0;
  for (const v of logits) sum += Math.exp(v - max);
  const lse = max + Math.log(sum);
  return logits.map((v) => v - lse);
}

/** Chooses a token from one row of logits (the row is modified in place). */
export function chooseToken(logits: Float32Array, p: SamplingParams, seen: Iterable<number>, rng: Rng): number {
  applyRepetitionPenalty(logits, seen, p.repetitionPenalty);
  if (p.temperature <= 0) return argmax(logits);
  const order = Array.from(logits.keys()).sort((a, b) => (logits[b] as number) - (logits[a] as number));
  const k = p.topK > 0 ? Math.min(p.topK, order.length) : order.length;
  const top = order.slice(0, k);
  const max = logits[top[0] as number] as number;
  const probs = top.map((i) => Math.exp(((logits[i] as number) - max) / p.temperature));
  const total = probs.reduce((s, v) => s + v, 0);
  let keep = probs.length;
  if (p.topP < 1) {
    let acc = 0;
    for (let i = 0; i < probs.length; i++) {
      acc += (probs[i] as number) / total;
      if (acc >= p.topP) { keep = i + 1; break; }
    }
  }
  const kept = probs.slice(0, keep);
  const keptTotal = kept.reduce((s, v) => s + v, 0);
  let r = rng.float() * keptTotal;
  for (let i = 0; i < kept.length; i++) {
    r -= kept[i] as number;
    if (r <= 0) return top[i] as number;
  }
  return top[keep - 1] as number;
}
