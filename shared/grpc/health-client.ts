/** A grpc.health.v1 Check call (readiness probes, tests, the orchestrator's wait-for-ready). */
import * as grpc from "@grpc/grpc-js";
import * as protoLoader from "@grpc/proto-loader";
import { protoPath } from "grpc-health-check";

const HealthClient = (grpc.loadPackageDefinition(protoLoader.loadSync(protoPath, { keepCase: true, enums: String })) as unknown as {
  grpc: { health: { v1: { Health: grpc.ServiceClientConstructor } } };
}).grpc.health.v1.Health;

/** The serving status of `service` ("" = the whole server) at `target`. */
export function checkHealth(target: string, service = "", deadlineMs = 5000): Promise<string> {
  const client = new HealthClient(target, grpc.credentials.createInsecure());
  return new Promise((resolve, reject) => {
    (client as unknown as { Check: (req: object, opts: object, cb: (err: Error | null, res?: { status: string }) => void) => void })
      .Check({ service }, { deadline: Date.now() + deadlineMs }, (err, res) => {
        client.close();
        if (err) reject(err);
        else resolve(res?.status ?? "UNKNOWN");
      });
  });
}
