# Finds every third-party dependency. Each comes from a Debian 12 package or
# from the pinned Python environment (scripts/requirements.txt) that
# scripts/setup creates; nothing is downloaded at configure time.
find_package(PkgConfig REQUIRED)
find_package(Threads REQUIRED)

# libtorch: PyPI's torch wheel (the CUDA build: it runs CPU ops where no GPU
# is present) in Topiary's virtual environment, found through
# torch.utils.cmake_prefix_path. The service-only build (the coordinator and
# its tests) needs neither it nor SentencePiece.
# The torch version the build expects: the one scripts/requirements.txt pins.
file(STRINGS "${PROJECT_SOURCE_DIR}/scripts/requirements.txt" _torch_pin REGEX "^torch==")
string(REGEX REPLACE "^torch==([^ ]+).*" "\\1" TOPIARY_TORCH_VERSION "${_torch_pin}")
if(NOT TOPIARY_SERVICE_ONLY)
  include(TopiaryTorch)
  pkg_check_modules(SENTENCEPIECE REQUIRED IMPORTED_TARGET sentencepiece)
endif()
find_package(absl REQUIRED)
find_package(nlohmann_json 3.10 REQUIRED)

# spdlog is optional only for compute-only builds (the GPU image lacks it);
# common/ then logs through a plain stderr sink.
if(TOPIARY_COMPUTE_ONLY)
  find_package(spdlog QUIET)
else()
  find_package(spdlog REQUIRED)
  find_package(Protobuf REQUIRED)
  find_package(gRPC CONFIG REQUIRED)
  find_package(RocksDB CONFIG REQUIRED)
  find_package(prometheus-cpp CONFIG REQUIRED)
  find_package(yaml-cpp REQUIRED)
  find_package(CLI11 CONFIG REQUIRED)
  find_package(OpenSSL REQUIRED)  # SHA-256 of worker secrets (libssl-dev)
endif()
if(TOPIARY_BUILD_TESTS)
  find_package(GTest REQUIRED)
endif()

# NCCL: AUTO turns it on when nccl.h, libnccl and the CUDA runtime are found.
# It is the wheel's NCCL (nvidia-nccl-cu13, site-packages/nvidia/nccl), the
# one libtorch_cuda itself loads: a process then holds one libnccl.so.2,
# whichever directory the loader would find first. /usr/local/cuda's NCCL is
# the same release (2.28.9) but is only the fallback for a build without the
# wheel. The CUDA runtime likewise comes from the wheel (nvidia/cu13).
set(TOPIARY_NCCL_ENABLED OFF)
if(NOT TOPIARY_WITH_NCCL STREQUAL "OFF")
  set(_cuda_hints ${TOPIARY_NVIDIA_DIR}/nccl ${TOPIARY_NVIDIA_DIR}/cu13 /usr/local/cuda $ENV{CUDA_HOME})
  find_path(NCCL_INCLUDE_DIR nccl.h HINTS ${_cuda_hints} PATH_SUFFIXES include NO_DEFAULT_PATH)
  find_library(NCCL_LIBRARY NAMES nccl libnccl.so.2 HINTS ${_cuda_hints} PATH_SUFFIXES lib lib64 NO_DEFAULT_PATH)
  find_path(CUDA_RUNTIME_INCLUDE_DIR cuda_runtime_api.h HINTS ${_cuda_hints} PATH_SUFFIXES include NO_DEFAULT_PATH)
  find_library(CUDA_RUNTIME_LIBRARY NAMES cudart libcudart.so.13 HINTS ${_cuda_hints} PATH_SUFFIXES lib lib64 NO_DEFAULT_PATH)
  if(NCCL_INCLUDE_DIR AND NCCL_LIBRARY AND CUDA_RUNTIME_INCLUDE_DIR AND CUDA_RUNTIME_LIBRARY)
    set(TOPIARY_NCCL_ENABLED ON)
  elseif(TOPIARY_WITH_NCCL STREQUAL "ON")
    message(FATAL_ERROR "TOPIARY_WITH_NCCL=ON but nccl.h/libnccl/cudart were not found")
  endif()
endif()
