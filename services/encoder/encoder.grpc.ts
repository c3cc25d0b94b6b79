/** gRPC binding of the encoder stage: request/response messages ↔ EncoderService, errors → status. */
import type { Handlers, SendUnaryData, ServerUnaryCall } from "../../shared/grpc/grpc.adapter.ts";
import { toGrpcError } from "../../shared/grpc/status-map.ts";
import type { WireTensor } from "../../shared/tensor-codec.ts";
import type { EncodeRequestMessage, EncoderService } from "./encoder.service.ts";

export function encoderHandlers(service: EncoderService, log?: (msg: string, err: unknown) => void): Handlers {
  return {
    Encode(call: ServerUnaryCall<EncodeRequestMessage, { embeddings: WireTensor }>, callback: SendUnaryData<{ embeddings: WireTensor }>) {
      const ac = new AbortController();
      call.on("cancelled", () => ac.abort());
      service.encode(call.request, ac.signal).then(
        (embeddings) => callback(null, { embeddings }),
        (err: unknown) => callback(toGrpcError(err, log) as never),
      );
    },
  };
}
