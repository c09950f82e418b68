# The Python extension gptq._C. It is built against torch's own copy of pybind11 (torch/include comes
# first on the include path) so that both share one pybind11 "internals" ABI; the PyPI pybind11 is
# pinned to the same version and only supplies pybind11_add_module.
execute_process(COMMAND "${Python_EXECUTABLE}" -c "import pybind11; print(pybind11.get_cmake_dir())"
  OUTPUT_VARIABLE _gptq_pybind11_dir OUTPUT_STRIP_TRAILING_WHITESPACE RESULT_VARIABLE _rc)
if(NOT _rc EQUAL 0)
  message(FATAL_ERROR "gptq: pybind11 is not installed for ${Python_EXECUTABLE} (pip install pybind11==3.0.1)")
endif()
set(PYBIND11_FINDPYTHON ON)
find_package(pybind11 CONFIG REQUIRED HINTS "${_gptq_pybind11_dir}")

file(GLOB GPTQ_PY_SOURCES CONFIGURE_DEPENDS "${CMAKE_CURRENT_SOURCE_DIR}/src/python/*.cpp")
pybind11_add_module(_C MODULE ${GPTQ_PY_SOURCES})
target_include_directories(_C BEFORE PRIVATE "${GPTQ_TORCH_ROOT}/include")
# libtorch_python holds the pybind11 casters for at::Tensor; the torch target does not link it.
target_link_libraries(_C PRIVATE gptq "${GPTQ_TORCH_ROOT}/lib/libtorch_python.so")
target_compile_definitions(_C PRIVATE TORCH_EXTENSION_NAME=_C)
# _C sits in gptq/, libgptq in gptq/lib/. torch's libraries are found because `import torch` has
# loaded them before gptq loads _C.
set_target_properties(_C PROPERTIES INSTALL_RPATH "$ORIGIN/lib" BUILD_WITH_INSTALL_RPATH OFF)
set_target_properties(gptq PROPERTIES INSTALL_RPATH "$ORIGIN")
install(TARGETS _C LIBRARY DESTINATION ${GPTQ_INSTALL_PYDIR})
install(FILES "${CMAKE_CURRENT_BINARY_DIR}/_build_info.json" DESTINATION ${GPTQ_INSTALL_PYDIR})
