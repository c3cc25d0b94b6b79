/** JSON-lines logging to stderr: one object per event, with the service name and a level. */
export type LogLevel = "debug" | "info" | "warn" | "error";

export interface Logger {
  debug(msg: string, fields?: Record<string, unknown>): void;
  info(msg: string, fields?: Record<string, unknown>): void;
  warn(msg: string, fields?: Record<string, unknown>): void;
  error(msg: string, fields?: Record<string, unknown>): void;
  child(fields: Record<string, unknown>): Logger;
}

const ORDER: Record<LogLevel, number> = { debug: 10, info: 20, warn: 30, error: 40 };

export function createLogger(service: string, level: LogLevel = (process.env.LOG_LEVEL as LogLevel) ?? "info", base: Record<string, unknown> = {}): Logger {
  const emit = (lvl: LogLevel, msg: string, fields?: Record<string, unknown>): void => {
    if (ORDER[lvl] < (ORDER[level] ?? 20)) return;
    const f = { ...fields };
    if (f.err instanceof Error) f.err = { message: f.err.message, name: f.err.name, code: (f.err as { code?: unknown }).code };
    process.stderr.write(JSON.stringify({ time: new Date().toISOString(), level: lvl, service, msg, ...base, ...f }) + "\n");
  };
  return {
    debug: (m, f) => emit("debug", m, f), info: (m, f) => emit("info", m, f), warn: (m, f) => emit("warn", m, f), error: (m, f) => emit("error", m, f),
    child: (fields) => createLogger(service, level, { ...base, ...fields }),
  };
}
