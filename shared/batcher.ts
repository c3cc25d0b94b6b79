/**
 * Dynamic batching for stage servers: requests that arrive while a batch is forming (up to
 * `maxBatchSize` items, at most `maxBatchDelayMs` after the first) run as one engine call. Items
 * whose caller gave up (AbortSignal) before the batch ran are dropped from it.
 */
export interface BatcherOptions<I, O> {
  /** Runs one batch; returns one output per input, in order. */
  run: (inputs: I[]) => Promise<O[]>;
  /** Largest batch (in items). Default 16. */
  maxBatchSize?: number;
  /** Longest wait for more items after the first arrives. Default 5 ms. */
  maxBatchDelayMs?: number;
  /** Called after each engine call with its size and the oldest item's queue delay. */
  onBatch?: (info: { size: number; queueDelayMs: number; runMs: number }) => void;
}

interface Pending<I, O> {
  input: I;
  enqueuedAt: number;
  signal?: AbortSignal;
  resolve: (o: O) => void;
  reject: (e: unknown) => void;
}

export class BatchAbortedError extends Error {
  readonly code = "canceled";
  constructor() {
    super("the request was canceled before its batch ran");
  }
}

export class DynamicBatcher<I, O> {
  private queue: Pending<I, O>[] = [];
  private timer: NodeJS.Timeout | null = null;
  private running = 0;
  private readonly maxBatchSize: number;
  private readonly maxBatchDelayMs: number;

  constructor(private readonly opts: BatcherOptions<I, O>) {
    this.maxBatchSize = opts.maxBatchSize ?? 16;
    this.maxBatchDelayMs = opts.maxBatchDelayMs ?? 5;
  }

  /** Items waiting for a batch. */
  get queued(): number {
    return this.queue.length;
  }

  /** Batches running now. */
  get inFlight(): number {
    return this.running;
  }

  submit(input: I, signal?: AbortSignal): Promise<O> {
    if (signal?.aborted) return Promise.reject(new BatchAbortedError());
    return new Promise<O>((resolve, reject) => {
      this.queue.push({ input, signal, resolve, reject, enqueuedAt: Date.now() });
      if (this.queue.length >= this.maxBatchSize) this.flush();
      else this.timer ??= setTimeout(() => this.flush(), this.maxBatchDelayMs);
    });
  }

  private flush(): void {
    if (this.timer) { clearTimeout(this.timer); this.timer = null; }
    while (this.queue.length > 0) {
      const batch = this.queue.splice(0, this.maxBatchSize).filter((p) => {
        if (!p.signal?.aborted) return true;
        p.reject(new BatchAbortedError());
        return false;
      });
      if (batch.length > 0) void this.runBatch(batch);
    }
  }

  private async runBatch(batch: Pending<I, O>[]): Promise<void> {
    this.running++;
    const started = Date.now();
    try {
      const outputs = await this.opts.run(batch.map((p) => p.input));
      if (outputs.length !== batch.length) throw new Error(`batch returned ${outputs.length} outputs for ${batch.length} inputs`);
      batch.forEach((p, i) => p.resolve(outputs[i] as O));
    } catch (err) {
      for (const p of batch) p.reject(err);
    } finally {
      this.running--;
      this.opts.onBatch?.({ size: batch.length, queueDelayMs: started - Math.min(...batch.map((p) => p.enqueuedAt)), runMs: Date.now() - started });
    }
  }
}
