// Debian's CivetWeb (/metrics, the router's HTTP API) creates its threads
// with a fixed 100 KiB stack (built with USE_STACK_SIZE=102400). glibc places
// the static TLS of every library loaded at start on each thread's stack and
// refuses (EINVAL) a stack that cannot hold it with room to spare: a process
// that links cuBLASLt (94 KiB of TLS), as memshare_worker does, then cannot
// start CivetWeb at all. This definition takes precedence over libc's for
// every caller (the executable's symbols come first in lookup) and raises
// stacks smaller than kMinStackBytes to that size; larger requests and the
// default attributes are untouched.
#include <dlfcn.h>
#include <pthread.h>

#include <algorithm>
#include <cstddef>

namespace {

constexpr size_t kMinStackBytes = size_t{1} << 20;

using SetStackSize = int (*)(pthread_attr_t*, size_t);

SetStackSize LibcSetStackSize() {
  static const auto fn =
      reinterpret_cast<SetStackSize>(dlsym(RTLD_NEXT, "pthread_attr_setstacksize"));
  return fn;
}

}  // namespace

extern "C" int pthread_attr_setstacksize(pthread_attr_t* attr, size_t stack_size) {
  const SetStackSize libc = LibcSetStackSize();
  return libc(attr, std::max(stack_size, kMinStackBytes));
}
