/** Tensors on the wire (proto `emu.v1.Tensor`): little-endian, row-major bytes with dtype and dims. */
import type { HostTensor } from "./engine/onnx-session.adapter.ts";

export interface WireTensor {
  dtype: string;
  dims: number[];
  data: Uint8Array;
}

export class TensorCodecError extends Error {
  readonly code = "invalid_tensor";
}

const LITTLE_ENDIAN = new Uint8Array(new Uint16Array([1]).buffer)[0] === 1;

export function toWire(t: HostTensor): WireTensor {
  if (!LITTLE_ENDIAN) throw new TensorCodecError("big-endian hosts are not supported");
  const d = t.data;
  return { dtype: t.dtype, dims: [...t.dims], data: new Uint8Array(d.buffer, d.byteOffset, d.byteLength) };
}

export function floatsToWire(data: Float32Array, dims: number[]): WireTensor {
  return toWire({ dtype: "float32", dims, data });
}

/** Decodes a wire tensor, checking that dims and byte length agree (copies into aligned memory). */
export function fromWire(t: WireTensor | null | undefined, expect?: { dtype?: string; rank?: number }): HostTensor {
  if (!t) throw new TensorCodecError("tensor missing");
  const dims = t.dims.map(Number);
  if (expect?.dtype && t.dtype !== expect.dtype) throw new TensorCodecError(`tensor dtype ${t.dtype}, expected ${expect.dtype}`);
  if (expect?.rank !== undefined && dims.length !== expect.rank) throw new TensorCodecError(`tensor rank ${dims.length}, expected ${expect.rank}`);
  const count = dims.reduce((a, b) => a * b, 1);
  const size = t.dtype === "float32" ? 4 : t.dtype === "int64" ? 8 : 0;
  if (!size) throw new TensorCodecError(`unsupported tensor dtype ${t.dtype}`);
  if (t.data.byteLength !== count * size) throw new TensorCodecError(`tensor of dims [${dims.join(",")}] needs ${count * size} bytes, got ${t.data.byteLength}`);
  const copy = new Uint8Array(t.data.byteLength);
  copy.set(t.data);
  return t.dtype === "float32"
    ? { dtype: "float32", dims, data: new Float32Array(copy.buffer) }
    : { dtype: "int64", dims, data: new BigInt64Array(copy.buffer) };
}
