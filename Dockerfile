# syntax=docker/dockerfile:1.7
# One image, one entry per service: EMU_SERVICE=gateway|orchestrator|encoder|reasoner|decoder|all-in-one
# picks what `services/serve.ts` runs. Two flavours:
#   docker build -t emu-serve .                                   # CPU (onnxruntime's CPU provider)
#   docker build -t emu-serve:cuda --build-arg FLAVOR=cuda .      # + onnxruntime's CUDA 12 provider
# The model package: baked in (MODEL=baked, the default: models/emu2-tiny, ~22 MB) or mounted at
# run time (MODEL=mounted: nothing baked; set EMU_MODEL_DIR to the mount, e.g. a real Emu2 export).
ARG NODE_IMAGE=node:20-bookworm-slim
ARG CUDA_IMAGE=nvidia/cuda:12.8.1-cudnn-runtime-ubuntu24.04
ARG FLAVOR=cpu
ARG MODEL=baked

# ---- production dependencies only (.npmrc sets ignore-scripts: onnxruntime-node ships its CPU binaries)
FROM ${NODE_IMAGE} AS deps
WORKDIR /app
COPY package.json package-lock.json .npmrc ./
RUN npm ci --omit=dev --no-audit --no-fund && npm cache clean --force

# ---- the CUDA execution provider's libraries, fetched at build time (never at run time)
FROM deps AS deps-cuda
RUN cd node_modules/onnxruntime-node && ONNXRUNTIME_NODE_INSTALL=cuda12 node script/install.js

# ---- runtime bases: ffmpeg for MP4 video output; an unprivileged user
FROM ${NODE_IMAGE} AS base-cpu
RUN apt-get update && apt-get install -y --no-install-recommends ffmpeg \
  && rm -rf /var/lib/apt/lists/*
COPY --from=deps /app/node_modules /app/node_modules

FROM ${CUDA_IMAGE} AS base-cuda
RUN apt-get update && apt-get install -y --no-install-recommends ffmpeg ca-certificates \
  && rm -rf /var/lib/apt/lists/*
COPY --from=deps /usr/local/bin/node /usr/local/bin/node
COPY --from=deps-cuda /app/node_modules /app/node_modules

FROM base-${FLAVOR} AS app
RUN groupadd --system --gid 10001 emu && useradd --system --uid 10001 --gid emu --home-dir /app --shell /usr/sbin/nologin emu
WORKDIR /app
COPY package.json tsconfig.json ./
COPY proto proto
COPY shared shared
COPY services services
COPY cli cli
ENV NODE_ENV=production \
    EMU_SERVICE=all-in-one \
    DATA_DIR=/var/lib/emu
RUN mkdir -p /var/lib/emu /app/models && chown emu:emu /var/lib/emu

FROM app AS model-mounted
ENV EMU_MODEL_DIR=/models/emu2

FROM app AS model-baked
COPY models/emu2-tiny models/emu2-tiny

FROM model-${MODEL} AS final
USER 10001:10001
# Gateway 8080; orchestrator metrics 9464; stages gRPC 50051-50053 and metrics 9465-9467.
EXPOSE 8080 9464 50051 50052 50053 9465 9466 9467
HEALTHCHECK --interval=15s --timeout=5s --start-period=60s --retries=3 \
  CMD ["node", "--import", "tsx", "services/serve.ts", "healthcheck"]
ENTRYPOINT ["node", "--import", "tsx", "services/serve.ts"]
