// The shape of one physical KV block of a layer group, shared by host code and
// kernels (plain POD, no CUDA types). DESIGN.md §4:
//   [num_blocks][layers][2 (K, V)][kv_heads][block_size][head_dim], bf16.
#ifndef MEMSHARE_KERNELS_KV_BLOCK_SHAPE_H_
#define MEMSHARE_KERNELS_KV_BLOCK_SHAPE_H_

#include <cstdint>

namespace memshare::kernels {

struct KvBlockShape {
  int32_t layers = 0;      // layers in this layer group
  int32_t kv_heads = 0;    // KV heads held by this rank
  int32_t block_size = 0;  // token slots per block
  int32_t head_dim = 0;

  // Elements of one (layer, K or V) slab: kv_heads * block_size * head_dim.
  constexpr int64_t SlabElements() const {
    return int64_t{kv_heads} * block_size * head_dim;
  }
  // Elements of one whole block: layers * 2 * SlabElements().
  constexpr int64_t BlockElements() const {
    return int64_t{layers} * 2 * SlabElements();
  }
};

}  // namespace memshare::kernels

#endif  // MEMSHARE_KERNELS_KV_BLOCK_SHAPE_H_
