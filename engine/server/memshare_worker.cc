// memshare_worker: one model behind memshare.v1.WorkerService (see
// worker_main.h).
#include "engine/server/engine_factory.h"
#include "engine/server/worker_main.h"

int main(int argc, char** argv) {
  return memshare::engine::RunWorkerMain(
      argc, argv,
      "serves one model (rank 0 of a worker group) over gRPC "
      "(memshare.v1.WorkerService) to memshare_router, with /metrics; drains on SIGTERM.\n"
      "Usage: memshare_worker --model=DIR [--address=HOST:PORT] [--metrics_address=HOST:PORT]",
      memshare::engine::CreateEngineFromFlags);
}
