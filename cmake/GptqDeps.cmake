# Third-party dependencies other than torch. None is vendored: each comes from the system (Debian's
# nlohmann-json3-dev and libgtest-dev / googletest) or from a path handed to CMake (the GPU machine has
# no apt; scripts/prepare-carry copies Debian's files there).

# nlohmann/json: header-only, used privately by the checkpoint and config code.
add_library(gptq_json INTERFACE)
find_package(nlohmann_json 3 CONFIG QUIET)
if(nlohmann_json_FOUND)
  target_link_libraries(gptq_json INTERFACE nlohmann_json::nlohmann_json)
else()
  find_path(GPTQ_JSON_HEADER_DIR nlohmann/json.hpp HINTS "${GPTQ_JSON_INCLUDE_DIR}")
  if(NOT GPTQ_JSON_HEADER_DIR)
    message(FATAL_ERROR
      "gptq: nlohmann/json not found. Install Debian's nlohmann-json3-dev, or pass "
      "-DGPTQ_JSON_INCLUDE_DIR=<folder that holds nlohmann/json.hpp>.")
  endif()
  target_include_directories(gptq_json INTERFACE "${GPTQ_JSON_HEADER_DIR}")
endif()

if(GPTQ_BUILD_TESTS)
  if(GPTQ_GTEST_SOURCE_DIR)
    set(INSTALL_GTEST OFF CACHE BOOL "" FORCE)
    set(BUILD_GMOCK OFF CACHE BOOL "" FORCE)
    add_subdirectory("${GPTQ_GTEST_SOURCE_DIR}" "${CMAKE_BINARY_DIR}/_gtest" EXCLUDE_FROM_ALL)
    if(NOT TARGET GTest::gtest_main)  # googletest >= 1.11 defines it itself
      add_library(GTest::gtest_main ALIAS gtest_main)
    endif()
  else()
    find_package(GTest QUIET)
    if(NOT GTest_FOUND)
      message(FATAL_ERROR
        "gptq: GoogleTest not found. Install Debian's libgtest-dev, or pass "
        "-DGPTQ_GTEST_SOURCE_DIR=<googletest source tree>.")
    endif()
  endif()
endif()
