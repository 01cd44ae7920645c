// memshare_worker: one model behind memshare.v1.WorkerService (see
// worker_main.h).
#include "engine/server/engine_factory.h"
#include "engine/server/worker_main.h"

int main(int argc, char** argv) {
  return memshare::engine::RunWorkerMain(
      argc, argv,
      "serves one model (rank 0 of a worker group) over gRPC "
      "(memshare.v1.WorkerService) to memshare_router, with /metrics; drains on SIGTERM.\n"
      "Usage: memshare_worker --model=DIR [--address=HOST:PORT] [--metrics_address=HOST:PORT]\n"
      "Tensor parallel, one process per GPU, same flags on every rank:\n"
      "  rank 0:   memshare_worker --model=DIR --world_size=N --address=0.0.0.0:50051 ...\n"
      "  rank r>0: memshare_worker --model=DIR --world_size=N --rank=r "
      "--group_leader=HOST0:50051 ...\n"
      "(rank 0 answers the group rendezvous on its --address until every rank has joined, or on "
      "--group_address)",
      memshare::engine::CreateEngineFromFlags, memshare::engine::RunFollowerFromFlags);
}
