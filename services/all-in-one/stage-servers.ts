/** The three stage servers around one in-process model (the all-in-one, and the tests' stage cluster). */
import type { EmuModel } from "../../shared/engine/emu-model.ts";
import { StageServer } from "../../shared/grpc/grpc.adapter.ts";
import { maxMessageBytes } from "../../shared/stage-config.ts";
import { decoderHandlers } from "../decoder/decoder.grpc.ts";
import { DecoderService } from "../decoder/decoder.service.ts";
import { encoderHandlers } from "../encoder/encoder.grpc.ts";
import { EncoderService } from "../encoder/encoder.service.ts";
import { reasonerHandlers } from "../reasoner/reasoner.grpc.ts";
import { ReasonerService } from "../reasoner/reasoner.service.ts";

/** Servers for encoder, reasoner and decoder, in that order (not started); default 127.0.0.1:0 each. */
export function createStageServers(model: EmuModel, addresses: [string?, string?, string?] = []): [StageServer, StageServer, StageServer] {
  const m = model.manifest;
  const dims = { tokens: m.encoder.tokens_per_image, dim: m.encoder.dim };
  const bytes = maxMessageBytes(m);
  return [
    new StageServer({ stage: "Encoder", address: addresses[0], handlers: encoderHandlers(new EncoderService({ engine: model.encoder! })), maxMessageBytes: bytes }),
    new StageServer({ stage: "Reasoner", address: addresses[1], handlers: reasonerHandlers(new ReasonerService({ engine: model.reasoner! }), dims), maxMessageBytes: bytes }),
    new StageServer({ stage: "Decoder", address: addresses[2], handlers: decoderHandlers(new DecoderService({ engine: model.decoder! }), dims), maxMessageBytes: bytes }),
  ];
}
