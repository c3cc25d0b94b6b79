/**
 * Prometheus metrics of a stage service on its own HTTP port: batch sizes, queue delay, engine-call
 * latency and requests in flight (KEDA/HPA read `emu_stage_queue_delay_seconds` while the stage runs;
 * at zero replicas the orchestrator's `emu_stage_demand` is the signal).
 */
import { createServer, type Server } from "node:http";
import { Gauge, Histogram, Registry, collectDefaultMetrics } from "prom-client";

export class StageMetrics {
  readonly registry = new Registry();
  readonly batchSize: Histogram;
  readonly queueDelay: Histogram;
  readonly latency: Histogram;
  readonly inFlight: Gauge;
  private server: Server | null = null;

  constructor(readonly stage: string, inFlight: () => number) {
    collectDefaultMetrics({ register: this.registry });
    const labels = { stage };
    this.registry.setDefaultLabels(labels);
    this.batchSize = new Histogram({ name: "emu_stage_batch_size", help: "Items (images, sequences, UNet rows) per engine call", buckets: [1, 2, 4, 8, 16, 32, 64, 128], registers: [this.registry] });
    this.queueDelay = new Histogram({ name: "emu_stage_queue_delay_seconds", help: "Wait before an item's engine call started", buckets: [0.001, 0.005, 0.02, 0.05, 0.1, 0.5, 1, 5], registers: [this.registry] });
    this.latency = new Histogram({ name: "emu_stage_engine_seconds", help: "Engine call (batch or step) duration", buckets: [0.001, 0.005, 0.02, 0.05, 0.1, 0.5, 1, 5], registers: [this.registry] });
    this.inFlight = new Gauge({ name: "emu_stage_in_flight", help: "Requests being served", registers: [this.registry], collect() { this.set(inFlight()); } });
  }

  async listen(port: number, host = "0.0.0.0"): Promise<number> {
    this.server = createServer((req, res) => {
      if (req.url !== "/metrics") { res.writeHead(404).end(); return; }
      this.registry.metrics().then((b) => res.writeHead(200, { "content-type": this.registry.contentType }).end(b), () => res.writeHead(500).end());
    });
    this.server.listen(port, host);
    await new Promise((r) => this.server!.once("listening", r));
    return (this.server.address() as { port: number }).port;
  }

  close(): void {
    this.server?.close();
  }
}
