# Finds every third-party dependency. Each comes from a Debian 12 package
# (scripts/setup installs them); nothing is downloaded at configure time.
find_package(PkgConfig REQUIRED)
find_package(Threads REQUIRED)

# libtorch (libtorch-dev). Its config adds -D_GLIBCXX_USE_CXX11_ABI and friends.
find_package(Torch REQUIRED)
find_package(absl REQUIRED)
find_package(nlohmann_json 3.10 REQUIRED)
pkg_check_modules(SENTENCEPIECE REQUIRED IMPORTED_TARGET sentencepiece)

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
  find_package(Gloo CONFIG REQUIRED)
endif()
if(TOPIARY_BUILD_TESTS)
  find_package(GTest REQUIRED)
endif()

# NCCL: AUTO turns it on when libtorch was built with CUDA and nccl.h is found.
set(TOPIARY_NCCL_ENABLED OFF)
if(NOT TOPIARY_WITH_NCCL STREQUAL "OFF")
  find_path(NCCL_INCLUDE_DIR nccl.h HINTS /usr/local/cuda/include $ENV{CUDA_HOME}/include)
  find_library(NCCL_LIBRARY nccl HINTS /usr/local/cuda/lib64 /usr/local/cuda/lib $ENV{CUDA_HOME}/lib64)
  set(_torch_has_cuda OFF)
  if(TARGET torch_cuda OR TORCH_CUDA_LIBRARIES)
    set(_torch_has_cuda ON)
  endif()
  if(NCCL_INCLUDE_DIR AND NCCL_LIBRARY AND (_torch_has_cuda OR TOPIARY_WITH_NCCL STREQUAL "ON"))
    set(TOPIARY_NCCL_ENABLED ON)
  elseif(TOPIARY_WITH_NCCL STREQUAL "ON")
    message(FATAL_ERROR "TOPIARY_WITH_NCCL=ON but nccl.h/libnccl were not found")
  endif()
endif()
