/** Prometheus metrics of the gateway (prom-client imported here only). */
import { Counter, Gauge, Registry, collectDefaultMetrics } from "prom-client";

export class GatewayMetrics {
  readonly registry = new Registry();
  readonly jobsCreated: Counter<"task">;
  readonly backlog: Gauge;

  constructor(backlog: () => Promise<number>) {
    collectDefaultMetrics({ register: this.registry });
    this.jobsCreated = new Counter({ name: "emu_jobs_created_total", help: "Jobs accepted", labelNames: ["task"], registers: [this.registry] });
    this.backlog = new Gauge({
      name: "emu_jobs_backlog", help: "Jobs not yet started (waiting + prioritized + delayed)", registers: [this.registry],
      async collect() { this.set(await backlog()); },
    });
  }

  async render(): Promise<{ contentType: string; body: string }> {
    return { contentType: this.registry.contentType, body: await this.registry.metrics() };
  }
}
