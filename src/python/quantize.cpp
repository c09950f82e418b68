// pybind11 bindings of the GPTQ core (include/gptq/{config,quantize}.h): the config struct, the
// solver and RTN entry points, their result object, and the Hessian accumulator. The Python package
// wraps them in python/gptq/{config,quantize}.py.
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>
#include <torch/csrc/utils/pybind.h>

#include "gptq/config.h"
#include "gptq/quantize.h"

namespace py = pybind11;

namespace {

py::object tensor_or_none(const at::Tensor& t) { return t.defined() ? py::cast(t) : py::none(); }

py::tuple packed_tuple(const gptq::PackedWeight& p) { return py::make_tuple(p.qweight, p.qzeros, p.scales, p.g_idx); }

}  // namespace

void bind_quantize(py::module_& m) {
  // c10 errors carry a C++ backtrace in what(); Python users get the message alone, and bad
  // values (TORCH_CHECK_VALUE) arrive as ValueError.
  py::register_local_exception_translator([](std::exception_ptr p) {
    try {
      if (p) std::rethrow_exception(p);
    } catch (const c10::ValueError& e) {
      PyErr_SetString(PyExc_ValueError, e.what_without_backtrace());
    } catch (const c10::Error& e) {
      PyErr_SetString(PyExc_RuntimeError, e.what_without_backtrace());
    }
  });

  py::class_<gptq::QuantizeConfig>(m, "QuantizeConfig", "C++ gptq::QuantizeConfig (mirrored by BaseQuantizeConfig)")
      .def(py::init<>())
      .def_readwrite("bits", &gptq::QuantizeConfig::bits)
      .def_readwrite("group_size", &gptq::QuantizeConfig::group_size)
      .def_readwrite("damp_percent", &gptq::QuantizeConfig::damp_percent)
      .def_readwrite("desc_act", &gptq::QuantizeConfig::desc_act)
      .def_readwrite("static_groups", &gptq::QuantizeConfig::static_groups)
      .def_readwrite("sym", &gptq::QuantizeConfig::sym)
      .def_readwrite("true_sequential", &gptq::QuantizeConfig::true_sequential)
      .def_readwrite("model_name_or_path", &gptq::QuantizeConfig::model_name_or_path)
      .def_readwrite("model_file_base_name", &gptq::QuantizeConfig::model_file_base_name)
      .def_readwrite("checkpoint_format", &gptq::QuantizeConfig::checkpoint_format)
      .def_readwrite("quant_method", &gptq::QuantizeConfig::quant_method)
      .def_readwrite("damp_auto_increment", &gptq::QuantizeConfig::damp_auto_increment)
      .def_readwrite("mse", &gptq::QuantizeConfig::mse)
      .def_readwrite("block_size", &gptq::QuantizeConfig::block_size)
      .def("error", &gptq::QuantizeConfig::error,
           "'' when valid, else a message naming the first bad field, its value and the allowed set.")
      .def("validate", &gptq::QuantizeConfig::validate, "Raises ValueError naming the first bad field.");

  py::class_<gptq::QuantizeResult>(m, "QuantizeResult", "Unpacked result of the GPTQ solver or of RTN")
      .def_readonly("codes", &gptq::QuantizeResult::codes)
      .def_readonly("scales", &gptq::QuantizeResult::scales)
      .def_readonly("zeros", &gptq::QuantizeResult::zeros)
      .def_readonly("g_idx", &gptq::QuantizeResult::g_idx)
      .def_property_readonly("perm", [](const gptq::QuantizeResult& r) { return tensor_or_none(r.perm); })
      .def_readonly("loss", &gptq::QuantizeResult::loss)
      .def_readonly("damp_percent", &gptq::QuantizeResult::damp_percent)
      .def_readonly("seconds", &gptq::QuantizeResult::seconds)
      .def_readonly("bits", &gptq::QuantizeResult::bits)
      .def_readonly("group_size", &gptq::QuantizeResult::group_size)
      .def("dequantize", &gptq::dequantize_result, "float32 weight [N, K] the result represents")
      .def(
          "pack",
          [](const gptq::QuantizeResult& r, const std::string& format, const std::string& name) {
            return packed_tuple(gptq::pack_result(r, gptq::parse_checkpoint_format(format), name));
          },
          py::arg("checkpoint_format") = "gptq", py::arg("name") = "",
          "(qweight, qzeros, scales fp16, g_idx) in checkpoint format 'gptq' or 'gptq_v2'");

  m.def("gptq_quantize", &gptq::gptq_quantize, py::arg("weight"), py::arg("hessian"), py::arg("config"),
        py::arg("name") = "", py::call_guard<py::gil_scoped_release>(),
        "GPTQ solve of weight [N, K] with Hessian [K, K] (see include/gptq/quantize.h).");
  m.def("rtn_quantize", &gptq::rtn_quantize, py::arg("weight"), py::arg("config"), py::arg("name") = "",
        py::call_guard<py::gil_scoped_release>(), "Round-to-nearest on the GPTQ grid.");

  py::class_<gptq::HessianAccumulator>(m, "HessianAccumulator", "Running H = (2/n) sum x x^T over counted tokens")
      .def(py::init([](int64_t in_features, const std::optional<std::string>& device, const std::string& name) {
             c10::optional<at::Device> dev;
             if (device.has_value()) dev = at::Device(*device);
             return gptq::HessianAccumulator(in_features, dev, name);
           }),
           py::arg("in_features"), py::arg("device") = py::none(), py::arg("name") = "")
      .def("add_batch", &gptq::HessianAccumulator::add_batch, py::arg("x"), py::arg("mask") = py::none())
      .def_property_readonly("hessian", &gptq::HessianAccumulator::hessian)
      .def_property_readonly("nsamples", &gptq::HessianAccumulator::nsamples)
      .def_property_readonly("in_features", &gptq::HessianAccumulator::in_features)
      .def("reset", &gptq::HessianAccumulator::reset);
}
