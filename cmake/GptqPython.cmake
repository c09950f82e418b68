# The Python extension gptq._C, built with torch's own copy of pybind11 (torch/include/pybind11) and
# nothing else. pybind11 keeps process-wide "internals" (type registry, exception translators) that
# every module in the process shares; a module compiled with another pybind11 release, or with another
# release's CMake flags, can corrupt them. Seen on the GPU machine: PyPI's pybind11 3.1.0 next to torch's
# 3.0.1 crashed the first time an op raised an error. So the PyPI package is not used at all.
file(GLOB GPTQ_PY_SOURCES CONFIGURE_DEPENDS "${CMAKE_CURRENT_SOURCE_DIR}/src/python/*.cpp")
Python_add_library(_C MODULE WITH_SOABI ${GPTQ_PY_SOURCES})
target_include_directories(_C BEFORE PRIVATE "${GPTQ_TORCH_ROOT}/include")
# libtorch_python holds the pybind11 casters for at::Tensor; the torch target does not link it.
target_link_libraries(_C PRIVATE gptq "${GPTQ_TORCH_ROOT}/lib/libtorch_python.so")
target_compile_definitions(_C PRIVATE TORCH_EXTENSION_NAME=_C)
# Hidden visibility, as pybind11 requires of extension modules (its types must not clash across modules).
set_target_properties(_C PROPERTIES CXX_VISIBILITY_PRESET hidden VISIBILITY_INLINES_HIDDEN ON)
# _C sits in gptq/, libgptq in gptq/lib/. torch's libraries are found because `import torch` has
# loaded them before gptq loads _C.
set_target_properties(_C PROPERTIES INSTALL_RPATH "$ORIGIN/lib" BUILD_WITH_INSTALL_RPATH OFF)
install(TARGETS _C LIBRARY DESTINATION ${GPTQ_INSTALL_PYDIR})
install(FILES "${CMAKE_CURRENT_BINARY_DIR}/_build_info.json" DESTINATION ${GPTQ_INSTALL_PYDIR})
