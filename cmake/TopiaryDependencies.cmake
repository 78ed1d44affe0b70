# Finds every third-party dependency. Each comes from a Debian 12 package
# (scripts/setup installs them); nothing is downloaded at configure time.
find_package(PkgConfig REQUIRED)
find_package(Threads REQUIRED)

# libtorch (libtorch-dev). Its config adds -D_GLIBCXX_USE_CXX11_ABI and friends.
# The service-only build (the coordinator and its tests) needs neither it nor SentencePiece.
if(NOT TOPIARY_SERVICE_ONLY)
  find_package(Torch REQUIRED)
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
  if(NOT TOPIARY_SERVICE_ONLY)
    find_package(Gloo CONFIG REQUIRED)
  endif()
  find_package(OpenSSL REQUIRED)  # SHA-256 of worker secrets (libssl-dev)
endif()
if(TOPIARY_BUILD_TESTS)
  find_package(GTest REQUIRED)
endif()

# NCCL: AUTO turns it on when nccl.h, libnccl and the CUDA runtime are found.
# Our NCCL backend works on raw device buffers, so it needs no CUDA libtorch
# to build (with a CPU libtorch it refuses CPU tensors at run time, and its
# gpu-labelled test drives the raw-buffer API directly).
set(TOPIARY_NCCL_ENABLED OFF)
if(NOT TOPIARY_WITH_NCCL STREQUAL "OFF")
  set(_cuda_hints /usr/local/cuda $ENV{CUDA_HOME})
  find_path(NCCL_INCLUDE_DIR nccl.h HINTS ${_cuda_hints} PATH_SUFFIXES include)
  find_library(NCCL_LIBRARY nccl HINTS ${_cuda_hints} PATH_SUFFIXES lib64 lib)
  find_path(CUDA_RUNTIME_INCLUDE_DIR cuda_runtime_api.h HINTS ${_cuda_hints} PATH_SUFFIXES include)
  find_library(CUDA_RUNTIME_LIBRARY cudart HINTS ${_cuda_hints} PATH_SUFFIXES lib64 lib)
  if(NCCL_INCLUDE_DIR AND NCCL_LIBRARY AND CUDA_RUNTIME_INCLUDE_DIR AND CUDA_RUNTIME_LIBRARY)
    set(TOPIARY_NCCL_ENABLED ON)
  elseif(TOPIARY_WITH_NCCL STREQUAL "ON")
    message(FATAL_ERROR "TOPIARY_WITH_NCCL=ON but nccl.h/libnccl/cudart were not found")
  endif()
endif()
