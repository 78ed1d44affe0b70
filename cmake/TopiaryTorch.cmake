# libtorch from PyPI's torch wheel in Topiary's virtual environment
# (scripts/setup; scripts/venv prints where). The wheel is the CUDA build: its
# CPU ops run on a machine without a GPU, and every CUDA path of ours compiles
# and links against it here.
#
# Sets TORCH_LIBRARIES (imported targets), TOPIARY_TORCH_DIR (the package's
# directory) and TOPIARY_TORCH_CUDA (the CUDA version the wheel was built for).
if(NOT TOPIARY_PYTHON)
  execute_process(COMMAND ${PROJECT_SOURCE_DIR}/scripts/venv OUTPUT_VARIABLE _venv OUTPUT_STRIP_TRAILING_WHITESPACE)
  set(TOPIARY_PYTHON "${_venv}/bin/python" CACHE FILEPATH "The Python of Topiary's virtual environment (scripts/setup)")
endif()
execute_process(
  COMMAND ${TOPIARY_PYTHON} -c
    "import os, torch, torch.utils; print(torch.__version__.split('+')[0]); print(torch.utils.cmake_prefix_path); print(os.path.dirname(torch.__file__)); print(torch.version.cuda or '')"
  OUTPUT_VARIABLE _torch_info ERROR_VARIABLE _torch_err RESULT_VARIABLE _torch_rc OUTPUT_STRIP_TRAILING_WHITESPACE)
if(NOT _torch_rc EQUAL 0)
  message(FATAL_ERROR "libtorch: '${TOPIARY_PYTHON}' cannot import torch (run scripts/setup): ${_torch_err}")
endif()
string(REPLACE "\n" ";" _torch_info "${_torch_info}")
list(GET _torch_info 0 _torch_version)
list(GET _torch_info 1 _torch_prefix)
list(GET _torch_info 2 TOPIARY_TORCH_DIR)
list(LENGTH _torch_info _n)
set(TOPIARY_TORCH_CUDA "")
if(_n GREATER 3)
  list(GET _torch_info 3 TOPIARY_TORCH_CUDA)
endif()
if(NOT _torch_version VERSION_EQUAL TOPIARY_TORCH_VERSION)
  message(FATAL_ERROR "libtorch: found torch ${_torch_version} in ${TOPIARY_TORCH_DIR}, expected ${TOPIARY_TORCH_VERSION} (run scripts/setup)")
endif()
list(APPEND CMAKE_PREFIX_PATH "${_torch_prefix}")
set(Torch_DIR "${_torch_prefix}/Torch" CACHE PATH "libtorch's CMake package (the torch wheel's)" FORCE)
set(Caffe2_DIR "${_torch_prefix}/Caffe2" CACHE PATH "libtorch's Caffe2 package (the torch wheel's)" FORCE)

# The wheel's CUDA libraries (cuDNN, NCCL, the CUDA runtime) sit beside it in
# site-packages/nvidia; Caffe2's CUDA module finds the toolkit's headers and
# nvcc under /usr/local/cuda. No GPU is needed to configure or link.
if(NOT CUDAToolkit_ROOT AND EXISTS /usr/local/cuda)
  set(CUDAToolkit_ROOT /usr/local/cuda)
endif()
get_filename_component(TOPIARY_NVIDIA_DIR "${TOPIARY_TORCH_DIR}/../nvidia" ABSOLUTE)
if(NOT DEFINED TORCH_CUDA_ARCH_LIST AND NOT DEFINED ENV{TORCH_CUDA_ARCH_LIST})
  set(TORCH_CUDA_ARCH_LIST "9.0")  # the H100/H200 workers; the build compiles no kernels of its own yet
endif()
# Caffe2's config defines protobuf::libprotobuf as an empty target unless one
# exists: gRPC needs the real one (Debian's protobuf), so it is found first,
# and then taken off libtorch_cpu's interface again, since the wheel's
# libraries carry their own protobuf privately (statically, symbols hidden).
if(NOT TOPIARY_COMPUTE_ONLY)
  find_package(Protobuf REQUIRED)
endif()
# TorchConfig finds its libraries with find_library(... PATHS <wheel>/lib),
# which searches the system's directories first: where Debian's libtorch-dev
# is installed too, that found Debian's libc10 1.13 beside the wheel's
# libtorch 2.11 (the test binaries then aborted at start). The wheel's paths
# are set first, so nothing is searched.
foreach(_lib TORCH:torch c10:c10 C10_CUDA:c10_cuda CAFFE2_NVRTC:caffe2_nvrtc)
  string(REPLACE ":" ";" _pair "${_lib}")
  list(GET _pair 0 _var)
  list(GET _pair 1 _name)
  if(EXISTS "${TOPIARY_TORCH_DIR}/lib/lib${_name}.so")
    set(${_var}_LIBRARY "${TOPIARY_TORCH_DIR}/lib/lib${_name}.so" CACHE FILEPATH "the torch wheel's lib${_name}" FORCE)
  endif()
endforeach()
find_package(Torch REQUIRED)
foreach(_lib IN LISTS TORCH_LIBRARIES)
  if(_lib MATCHES "/lib(torch|c10)[^/]*\\.so" AND NOT _lib MATCHES "^${TOPIARY_TORCH_DIR}/")
    message(FATAL_ERROR "libtorch: ${_lib} is not the wheel's (${TOPIARY_TORCH_DIR}/lib)")
  endif()
endforeach()
if(NOT TORCH_LIBRARY MATCHES "^${TOPIARY_TORCH_DIR}/")
  message(FATAL_ERROR "libtorch: found ${TORCH_LIBRARY}, not the wheel's in ${TOPIARY_TORCH_DIR}")
endif()
if(TARGET torch_cpu)
  get_target_property(_links torch_cpu INTERFACE_LINK_LIBRARIES)
  if(_links)
    list(REMOVE_ITEM _links protobuf::libprotobuf)
    set_target_properties(torch_cpu PROPERTIES INTERFACE_LINK_LIBRARIES "${_links}")
  endif()
endif()
message(STATUS "libtorch ${_torch_version} (CUDA ${TOPIARY_TORCH_CUDA}) from ${TOPIARY_TORCH_DIR}")

# The wheel's include directory carries its own protobuf headers (3.13, for
# its ONNX code): a translation unit that includes both libtorch and our
# generated .pb.h must see Debian's protobuf headers (the library we link), so
# the build includes a view of the wheel's headers without google/.
# Made anew at each configure, so it follows the environment if it moves.
set(_view "${CMAKE_BINARY_DIR}/torch-include")
file(REMOVE_RECURSE "${_view}")
file(MAKE_DIRECTORY "${_view}")
file(GLOB _entries RELATIVE "${TOPIARY_TORCH_DIR}/include" "${TOPIARY_TORCH_DIR}/include/*")
foreach(_e IN LISTS _entries)
  if(NOT _e STREQUAL "google")
    file(CREATE_LINK "${TOPIARY_TORCH_DIR}/include/${_e}" "${_view}/${_e}" SYMBOLIC)
  endif()
endforeach()
foreach(_t torch torch_library torch_cpu torch_cuda c10 c10_cuda)
  if(TARGET ${_t})
    get_target_property(_dirs ${_t} INTERFACE_INCLUDE_DIRECTORIES)
    if(_dirs)
      list(TRANSFORM _dirs REPLACE "^${TOPIARY_TORCH_DIR}/include$" "${_view}")
      set_target_properties(${_t} PROPERTIES INTERFACE_INCLUDE_DIRECTORIES "${_dirs}")
    endif()
  endif()
endforeach()
