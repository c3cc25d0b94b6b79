/**
 * The only module that imports onnxruntime-node. The rest of the code sees `Graph` and `HostTensor`.
 * Execution providers come from config; onnxruntime does not fall back by itself when a GPU
 * provider fails to load, so this adapter retries on CPU and reports why.
 */
import * as ort from "onnxruntime-node";

export type DType = "float32" | "int64";

export interface HostTensor {
  dtype: DType;
  dims: number[];
  data: Float32Array | BigInt64Array;
}

export interface GraphOptions {
  /** Execution providers in order of preference. Default ["cpu"]. */
  providers?: string[];
  /** Called once when a requested provider failed and the graph runs on CPU instead. */
  onFallback?: (reason: string) => void;
  /** Intra-op threads; 0 lets onnxruntime decide. Default 0. */
  intraOpThreads?: number;
}

export class Graph {
  private constructor(
    private readonly session: ort.InferenceSession,
    readonly path: string,
    readonly provider: string,
  ) {}

  static async load(path: string, opts: GraphOptions = {}): Promise<Graph> {
    const providers = opts.providers ?? ["cpu"];
    const base: ort.InferenceSession.SessionOptions = {
      graphOptimizationLevel: "all",
      ...(opts.intraOpThreads ? { intraOpNumThreads: opts.intraOpThreads } : {}),
    };
    if (providers.length === 1 && providers[0] === "cpu") {
      return new Graph(await ort.InferenceSession.create(path, { ...base, executionProviders: ["cpu"] }), path, "cpu");
    }
    try {
      const session = await ort.InferenceSession.create(path, { ...base, executionProviders: providers });
      return new Graph(session, path, providers[0] as string);
    } catch (err) {
      opts.onFallback?.(`execution providers ${providers.join(",")} failed for ${path}: ${(err as Error).message}; using cpu`);
      return new Graph(await ort.InferenceSession.create(path, { ...base, executionProviders: ["cpu"] }), path, "cpu");
    }
  }

  get inputNames(): readonly string[] {
    return this.session.inputNames;
  }

  get outputNames(): readonly string[] {
    return this.session.outputNames;
  }

  async run(feeds: Record<string, HostTensor>): Promise<Record<string, HostTensor>> {
    const ortFeeds: Record<string, ort.Tensor> = {};
    for (const [name, t] of Object.entries(feeds)) ortFeeds[name] = new ort.Tensor(t.dtype, t.data, t.dims);
    const out = await this.session.run(ortFeeds);
    const result: Record<string, HostTensor> = {};
    for (const [name, t] of Object.entries(out)) {
      result[name] = { dtype: t.type as DType, dims: [...t.dims], data: t.data as Float32Array | BigInt64Array };
    }
    return result;
  }

  async release(): Promise<void> {
    await this.session.release();
  }
}
