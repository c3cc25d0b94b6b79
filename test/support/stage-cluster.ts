/** The three stage services on real gRPC servers at 127.0.0.1:0 around real ONNX engines, for tests. */
import { join } from "node:path";
import { EmuModel } from "../../shared/engine/emu-model.ts";
import { StageClients } from "../../shared/grpc/stage-clients.ts";
import { maxMessageBytes } from "../../shared/stage-config.ts";
import type { StageServer } from "../../shared/grpc/grpc.adapter.ts";
import { createStageServers } from "../../services/all-in-one/stage-servers.ts";

export const PACKAGE_DIR = join(import.meta.dirname, "../../models/emu2-tiny");

export interface StageCluster {
  model: EmuModel;
  clients: StageClients;
  servers: StageServer[];
  stop(): Promise<void>;
}

export async function startStageCluster(): Promise<StageCluster> {
  const model = await EmuModel.load(PACKAGE_DIR);
  const m = model.manifest;
  const dims = { tokens: m.encoder.tokens_per_image, dim: m.encoder.dim };
  const bytes = maxMessageBytes(m);
  const servers = createStageServers(model);
  const [e, r, d] = await Promise.all(servers.map((s) => s.start()));
  const clients = new StageClients({ encoder: `127.0.0.1:${e}`, reasoner: `127.0.0.1:${r}`, decoder: `127.0.0.1:${d}`, maxMessageBytes: bytes, dims, readyTimeoutMs: 5000 });
  return {
    model, clients, servers,
    stop: async () => {
      clients.close();
      await Promise.all(servers.map((s) => s.stop(1000)));
      await model.close();
    },
  };
}
