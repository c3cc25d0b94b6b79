/** gRPC binding of the reasoner stage: a server stream of token / visual / negative / done events. */
import type { Handlers, ServerWritableStream } from "../../shared/grpc/grpc.adapter.ts";
import { toGrpcError } from "../../shared/grpc/status-map.ts";
import { floatsToWire, fromWire, TensorCodecError, type WireTensor } from "../../shared/tensor-codec.ts";
import type { Embeddings } from "../../shared/engine/visual-encoder.engine.ts";
import type { ReasonerService } from "./reasoner.service.ts";

export interface GenerateRequestMessage {
  token_ids: number[];
  image_embeddings?: WireTensor | null;
  mode: "MODE_UNSPECIFIED" | "MODE_TEXT" | "MODE_IMAGE" | "MODE_VIDEO";
  sampling?: {
    max_new_tokens?: number; temperature?: number; top_k?: number; top_p?: number; repetition_penalty?: number;
    num_beams?: number; length_penalty?: number; stop?: string[]; seed?: number;
  } | null;
  frames?: number;
  include_negative?: boolean;
}

const MODES = { MODE_TEXT: "text", MODE_IMAGE: "image", MODE_VIDEO: "video" } as const;

export function reasonerHandlers(service: ReasonerService, dims: { tokens: number; dim: number }, log?: (msg: string, err: unknown) => void): Handlers {
  return {
    Generate(call: ServerWritableStream<GenerateRequestMessage, object>) {
      const ac = new AbortController();
      call.on("cancelled", () => ac.abort());
      const req = call.request;
      const run = async (): Promise<void> => {
        const mode = MODES[req.mode as keyof typeof MODES];
        if (!mode) throw Object.assign(new Error("mode must be MODE_TEXT, MODE_IMAGE or MODE_VIDEO"), { code: "invalid_argument" });
        let images: Embeddings = { count: 0, tokens: dims.tokens, dim: dims.dim, data: new Float32Array(0) };
        if (req.image_embeddings && req.image_embeddings.dims.length > 0) {
          const t = fromWire(req.image_embeddings, { dtype: "float32", rank: 3 });
          if (t.dims[1] !== dims.tokens || t.dims[2] !== dims.dim) throw new TensorCodecError(`image_embeddings must be [N, ${dims.tokens}, ${dims.dim}]`);
          images = { count: t.dims[0] as number, tokens: dims.tokens, dim: dims.dim, data: t.data as Float32Array };
        }
        const s = req.sampling ?? {};
        if (req.include_negative && mode !== "text") {
          call.write({ negative: floatsToWire(await service.unconditional(), [dims.tokens, dims.dim]) });
        }
        const res = await service.generate({
          tokenIds: req.token_ids.map(Number), images, mode, frames: req.frames || undefined, signal: ac.signal,
          text: {
            maxNewTokens: s.max_new_tokens, temperature: s.temperature, topK: s.top_k, topP: s.top_p, repetitionPenalty: s.repetition_penalty,
            numBeams: s.num_beams, lengthPenalty: s.length_penalty, stop: s.stop?.length ? s.stop : undefined, seed: s.seed,
          },
          onToken: (id, text) => call.write({ token: { id, text } }),
          onVisual: (index, emb) => call.write({ visual: { index, embeddings: floatsToWire(emb, [dims.tokens, dims.dim]) } }),
        });
        call.write({ done: { finish_reason: res.finishReason, usage: { prompt_tokens: res.usage.promptTokens, completion_tokens: res.usage.completionTokens }, text: res.text } });
        call.end();
      };
      run().catch((err: unknown) => {
        if (ac.signal.aborted) return;
        call.emit("error", toGrpcError(err, log));
      });
    },
  };
}
