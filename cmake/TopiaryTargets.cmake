# Helpers that give every Topiary target the same flags.

set(TOPIARY_WARNINGS -Wall -Wextra -Wno-unused-parameter -Wno-sign-compare -Werror)

# Every target compiles with -pthread (gRPC and Abseil add it to their users),
# so that one precompiled header fits all of them.
add_compile_options(-pthread)
add_link_options(-pthread)

if(TOPIARY_SANITIZE)
  add_compile_options(-fsanitize=${TOPIARY_SANITIZE} -fno-omit-frame-pointer)
  add_link_options(-fsanitize=${TOPIARY_SANITIZE})
  if(TOPIARY_SANITIZE MATCHES "undefined")
    add_compile_options(-fno-sanitize-recover=undefined)  # a UB report fails the test
  endif()
endif()

# Fuzz builds instrument every library for coverage; the fuzz targets link libFuzzer.
if(TOPIARY_FUZZ)
  add_compile_options(-fsanitize=fuzzer-no-link)
endif()

# clang checks the locking annotations (ABSL_GUARDED_BY and friends, common/mutex.h).
if(CMAKE_CXX_COMPILER_ID MATCHES "Clang")
  list(APPEND TOPIARY_WARNINGS -Wthread-safety -Wno-unused-command-line-argument)
endif()

# topiary_target_defaults(<target>): warnings as errors for our own code, and
# the repository root on the include path (includes read "worker/model/llama.h").
function(topiary_target_defaults target)
  target_compile_options(${target} PRIVATE ${TOPIARY_WARNINGS})
  target_include_directories(${target} PUBLIC ${PROJECT_SOURCE_DIR})
endfunction()

# topiary_torch_target(<target>): links libtorch and reuses one precompiled
# header (cmake/torch_pch.h) built once for all libtorch-heavy targets.
function(topiary_torch_target target)
  target_link_libraries(${target} PUBLIC ${TORCH_LIBRARIES})
  # The torch wheel's libraries export copies of some libstdc++ functions
  # (std::filesystem among them, from the toolchain that built them). Naming
  # libstdc++ before anything else makes it the first library the loader
  # searches, so our calls (and libtorch's) bind to the system's libstdc++,
  # as they do when Python loads libtorch: bound to libtorch's copy,
  # std::filesystem::remove_all jumps to a null pointer.
  target_link_options(${target} PUBLIC "LINKER:--push-state,--no-as-needed" -lstdc++ "LINKER:--pop-state")
  # libtorch's headers trip -Wextra in places we do not own.
  target_compile_options(${target} PRIVATE -Wno-error=deprecated-declarations)
  if(TOPIARY_PCH)
    if(NOT TARGET topiary_torch_pch)
      message(FATAL_ERROR "topiary_torch_pch must be defined before ${target}")
    endif()
    target_precompile_headers(${target} REUSE_FROM topiary_torch_pch)
  endif()
endfunction()

# topiary_torch_free_sources(<source>...): sources of a libtorch target that do
# not include libtorch (directly or through a header) skip its precompiled
# header, which would otherwise make them parse and instantiate libtorch for
# nothing (config_test.cc: 34 s with it, 17 s without). Call it in the
# directory that adds the target.
function(topiary_torch_free_sources)
  set_source_files_properties(${ARGN} PROPERTIES SKIP_PRECOMPILE_HEADERS ON)
endfunction()

# One precompiled libtorch header, compiled once and reused by every target
# that calls topiary_torch_target(). Without it each libtorch translation unit
# re-parses ~300k lines of headers.
if(TOPIARY_PCH)
  add_library(topiary_torch_pch STATIC ${PROJECT_SOURCE_DIR}/cmake/torch_pch.cc)
  target_link_libraries(topiary_torch_pch PUBLIC ${TORCH_LIBRARIES})
  target_compile_options(topiary_torch_pch PRIVATE ${TOPIARY_WARNINGS} -Wno-error=deprecated-declarations)
  target_precompile_headers(topiary_torch_pch PRIVATE ${PROJECT_SOURCE_DIR}/cmake/torch_pch.h)
endif()
