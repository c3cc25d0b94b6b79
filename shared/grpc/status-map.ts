/**
 * The one mapping from our errors to gRPC status (and back, for clients). Errors carry a stable
 * `code`; unknown errors become INTERNAL without their stack.
 */
import { Status } from "./grpc.adapter.ts";

const TO_STATUS: Record<string, number> = {
  invalid_argument: Status.INVALID_ARGUMENT,
  invalid_prompt: Status.INVALID_ARGUMENT,
  invalid_tensor: Status.INVALID_ARGUMENT,
  invalid_decoder: Status.INVALID_ARGUMENT,
  image_unreadable: Status.INVALID_ARGUMENT,
  image_too_large: Status.INVALID_ARGUMENT,
  prompt_too_long: Status.INVALID_ARGUMENT,
  video_format_unavailable: Status.FAILED_PRECONDITION,
  canceled: Status.CANCELLED,
};

export interface GrpcErrorShape {
  code: number;
  details: string;
}

export function toGrpcError(err: unknown, log?: (msg: string, err: unknown) => void): GrpcErrorShape {
  const code = typeof err === "object" && err !== null && "code" in err ? (err as { code: unknown }).code : undefined;
  if (typeof code === "string" && code in TO_STATUS) {
    return { code: TO_STATUS[code] as number, details: `${code}: ${(err as Error).message}` };
  }
  log?.("unexpected error in a gRPC handler", err);
  return { code: Status.INTERNAL, details: "internal error" };
}
