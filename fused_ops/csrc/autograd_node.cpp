// A C++ autograd node whose backward calls a Python function: the eager autograd path of
// fused_ops' single-input ops (activations, softmax, log_softmax).
//
// Why: a Python torch.autograd.Function costs about 3 us of host time per forward and
// backward beyond a C++ node (its ctx object, the Python forward and backward wrappers,
// saved-tensor unpacking), more than a whole small eager op. Here the forward's kernel
// runs from Python as usual and `attach` records it in the autograd graph the way
// torch's own ops do (collect_next_edges, set_history, SavedVariable); the node's apply
// calls the op's Python backward, which launches the backward kernel.

#include <torch/csrc/Exceptions.h>
#include <torch/csrc/autograd/functions/utils.h>
#include <torch/csrc/autograd/node.h>
#include <torch/csrc/autograd/saved_variable.h>
#include <torch/extension.h>

namespace {

using torch::autograd::Node;
using torch::autograd::SavedVariable;
using torch::autograd::variable_list;

struct PythonBackward : public Node {
  std::string name_;
  // backward_(grad_output, saved, *args) -> grad_input; both owned references.
  PyObject* backward_ = nullptr;
  PyObject* args_ = nullptr;
  SavedVariable saved_;

  ~PythonBackward() override {
    // The engine may drop the graph on any thread, and after the interpreter is gone.
    if (Py_IsInitialized()) {
      pybind11::gil_scoped_acquire gil;
      Py_XDECREF(backward_);
      Py_XDECREF(args_);
    }
  }

  std::string name() const override {
    return name_;
  }

  variable_list apply(variable_list&& grads) override {
    if (!grads[0].defined()) {
      return {at::Tensor()};
    }
    pybind11::gil_scoped_acquire gil;
    // Raises torch's "backward through the graph a second time" error once released,
    // and the in-place error if the saved tensor was modified.
    at::Tensor saved = saved_.unpack(getptr());
    try {
      pybind11::tuple extra = pybind11::reinterpret_borrow<pybind11::tuple>(args_);
      pybind11::object result = pybind11::reinterpret_borrow<pybind11::object>(backward_)(
          grads[0], saved, *extra);
      return {result.cast<at::Tensor>()};
    } catch (pybind11::error_already_set& error) {
      // Keep the Python exception (its type and traceback) for the caller of backward().
      error.restore();
      throw python_error();
    }
  }

  void release_variables() override {
    saved_.reset_data();
  }
};

// Record `output = op(input)` in the autograd graph: `output`, a fresh tensor that does
// not require grad, gets a PythonBackward node whose next edge is `input`'s gradient
// edge, saving `saved` for the backward: `output` itself, `input`, or another tensor the
// forward made (a gradient computed in the forward, say).
at::Tensor attach(
    const at::Tensor& output,
    const at::Tensor& input,
    const at::Tensor& saved,
    pybind11::object backward,
    pybind11::tuple args,
    std::string name) {
  TORCH_CHECK(!output.requires_grad(), "attach: the output already requires grad");
  auto node = c10::make_intrusive<PythonBackward>();
  node->name_ = std::move(name);
  node->backward_ = backward.release().ptr();
  node->args_ = args.release().ptr();
  node->set_next_edges(torch::autograd::collect_next_edges(input));
  torch::autograd::set_history(output, node);
  // After set_history, so that a saved output knows this node is its grad_fn and is
  // stored without a reference cycle (as torch's own nodes save their results).
  const bool saved_is_output = saved.is_same(output);
  node->saved_ = SavedVariable(saved_is_output ? output : saved, saved_is_output);
  return output;
}

}  // namespace

PYBIND11_MODULE(TORCH_EXTENSION_NAME, module) {
  module.def("attach", &attach, "Record output = op(input) in the autograd graph with a Python backward.");
}
