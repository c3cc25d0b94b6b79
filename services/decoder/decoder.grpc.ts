/** gRPC binding of the decoder stage: a server stream of progress events, then one image per item. */
import type { Handlers, ServerWritableStream } from "../../shared/grpc/grpc.adapter.ts";
import { toGrpcError } from "../../shared/grpc/status-map.ts";
import { fromWire, TensorCodecError, type WireTensor } from "../../shared/tensor-codec.ts";
import type { DecoderService } from "./decoder.service.ts";

export interface DecodeRequestMessage {
  embeddings?: WireTensor | null;
  negative?: WireTensor | null;
  decoder?: string;
  steps?: number;
  guidance_scale?: number;
  seed?: number;
}

export function decoderHandlers(service: DecoderService, dims: { tokens: number; dim: number }, log?: (msg: string, err: unknown) => void): Handlers {
  return {
    Decode(call: ServerWritableStream<DecodeRequestMessage, object>) {
      const ac = new AbortController();
      call.on("cancelled", () => ac.abort());
      const req = call.request;
      const run = async (): Promise<void> => {
        const emb = fromWire(req.embeddings, { dtype: "float32", rank: 3 });
        if (emb.dims[1] !== dims.tokens || emb.dims[2] !== dims.dim) throw new TensorCodecError(`embeddings must be [count, ${dims.tokens}, ${dims.dim}]`);
        const negative = req.negative && req.negative.dims.length > 0 ? (fromWire(req.negative, { dtype: "float32", rank: 2 }).data as Float32Array) : undefined;
        let lastProgress = 0;
        const images = await service.decode({
          embeddings: emb.data as Float32Array, count: emb.dims[0] as number, negative, decoder: req.decoder || undefined,
          steps: req.steps ?? undefined, guidanceScale: req.guidance_scale ?? undefined, seed: req.seed ?? 0, signal: ac.signal,
          onProgress: (step, total) => {
            // At most ~20 progress events per request.
            if (step === total || step - lastProgress >= Math.max(1, Math.floor(total / 20))) {
              lastProgress = step;
              call.write({ progress: { step, total } });
            }
          },
        });
        images.forEach((img, index) => call.write({ image: { index, width: img.width, height: img.height, rgb: img.data } }));
        call.end();
      };
      run().catch((err: unknown) => {
        if (ac.signal.aborted) return;
        call.emit("error", toGrpcError(err, log));
      });
    },
  };
}
