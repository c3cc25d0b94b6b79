/**
 * The only module that imports @grpc/grpc-js and @grpc/proto-loader. It loads `proto/emu/v1/*.proto`
 * at runtime (no generated code to drift), builds servers that serve grpc.health.v1 and shut down in
 * two phases, and clients with waitForReady, deadlines and round-robin over every address a
 * `dns:///` name resolves to.
 */
import * as grpc from "@grpc/grpc-js";
import * as protoLoader from "@grpc/proto-loader";
import { HealthImplementation } from "grpc-health-check";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

export const PROTO_ROOT = join(dirname(fileURLToPath(import.meta.url)), "../../proto");
export type StageName = "Encoder" | "Reasoner" | "Decoder";

/** The gRPC (and health-check) service name of a stage, e.g. "emu.v1.Encoder". */
export function stageServiceName(stage: StageName): string {
  return `emu.v1.${stage}`;
}
const PROTO_FILES: Record<StageName, string> = { Encoder: "emu/v1/encoder.proto", Reasoner: "emu/v1/reasoner.proto", Decoder: "emu/v1/decoder.proto" };

const LOADER_OPTIONS: protoLoader.Options = { keepCase: true, longs: Number, enums: String, defaults: true, oneofs: true, includeDirs: [PROTO_ROOT] };

export function serviceDefinition(stage: StageName): grpc.ServiceDefinition {
  return clientConstructor(stage).service;
}

export function clientConstructor(stage: StageName): grpc.ServiceClientConstructor {
  const pkg = grpc.loadPackageDefinition(protoLoader.loadSync(PROTO_FILES[stage], LOADER_OPTIONS)) as unknown as {
    emu: { v1: Record<StageName, grpc.ServiceClientConstructor> };
  };
  return pkg.emu.v1[stage];
}

/** gRPC status codes the rest of the code may name. */
export const Status = grpc.status;
export type ServerUnaryCall<Req, Res> = grpc.ServerUnaryCall<Req, Res>;
export type Handlers = grpc.UntypedServiceImplementation;
export type ServerWritableStream<Req, Res> = grpc.ServerWritableStream<Req, Res>;
export type SendUnaryData<Res> = grpc.sendUnaryData<Res>;

export interface StageServerOptions {
  stage: StageName;
  handlers: grpc.UntypedServiceImplementation;
  /** host:port; port 0 picks a free one. Default 127.0.0.1:0. */
  address?: string;
  /** Largest message in bytes either way (sized from the manifest's dims by the caller). */
  maxMessageBytes: number;
  /** GOAWAY connections older than this so clients re-resolve and find new replicas. 0 or unset = never. */
  maxConnectionAgeMs?: number;
  /** Time calls on an aged connection get to finish. */
  maxConnectionAgeGraceMs?: number;
}

export class StageServer {
  private readonly server: grpc.Server;
  private readonly health = new HealthImplementation({ "": "NOT_SERVING" });
  readonly serviceName: string;
  port = 0;

  constructor(private readonly opts: StageServerOptions) {
    this.serviceName = stageServiceName(opts.stage);
    this.server = new grpc.Server({
      "grpc.max_receive_message_length": opts.maxMessageBytes,
      "grpc.max_send_message_length": opts.maxMessageBytes,
      ...(opts.maxConnectionAgeMs ? { "grpc.max_connection_age_ms": opts.maxConnectionAgeMs, "grpc.max_connection_age_grace_ms": opts.maxConnectionAgeGraceMs ?? 600_000 } : {}),
    });
    this.server.addService(serviceDefinition(opts.stage), opts.handlers);
    this.health.addToServer(this.server);
  }

  async start(): Promise<number> {
    this.port = await new Promise<number>((resolve, reject) => {
      this.server.bindAsync(this.opts.address ?? "127.0.0.1:0", grpc.ServerCredentials.createInsecure(), (err, port) => (err ? reject(err) : resolve(port)));
    });
    this.health.setStatus("", "SERVING");
    this.health.setStatus(this.serviceName, "SERVING");
    return this.port;
  }

  /** Phase 1: report NOT_SERVING and drain in-flight calls; phase 2: force after `graceMs`. */
  async stop(graceMs = 10_000): Promise<void> {
    this.health.setStatus("", "NOT_SERVING");
    this.health.setStatus(this.serviceName, "NOT_SERVING");
    await new Promise<void>((resolve) => {
      const timer = setTimeout(() => { this.server.forceShutdown(); resolve(); }, graceMs);
      this.server.tryShutdown(() => { clearTimeout(timer); resolve(); });
    });
  }
}

export interface StageClientOptions {
  stage: StageName;
  /** host:port or dns:///name:port (all resolved addresses share the load, round robin). */
  target: string;
  maxMessageBytes: number;
}

export function createStageClient(opts: StageClientOptions): grpc.Client {
  const Ctor = clientConstructor(opts.stage);
  return new Ctor(opts.target, grpc.credentials.createInsecure(), {
    "grpc.max_receive_message_length": opts.maxMessageBytes,
    "grpc.max_send_message_length": opts.maxMessageBytes,
    "grpc.service_config": JSON.stringify({ loadBalancingConfig: [{ round_robin: {} }] }),
  });
}

export type GrpcClient = grpc.Client;
export type ClientReadableStream<T> = grpc.ClientReadableStream<T>;
export type ServiceError = grpc.ServiceError;
export const Metadata = grpc.Metadata;
