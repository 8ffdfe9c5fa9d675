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
#include <torch/csrc/autograd/grad_mode.h>
#include <torch/csrc/autograd/node.h>
#include <torch/csrc/autograd/python_variable.h>
#include <torch/csrc/autograd/saved_variable.h>
#include <torch/extension.h>

namespace {

using torch::autograd::Node;
using torch::autograd::SavedVariable;
using torch::autograd::variable_list;

struct PythonBackward : public Node {
  std::string name_;
  // backward_(grad_output, saved, *args) -> grad_input, and the same recorded by autograd
  // (for create_graph=True); args_ is a tuple. Owned references.
  PyObject* backward_ = nullptr;
  PyObject* differentiable_backward_ = nullptr;
  PyObject* args_ = nullptr;
  SavedVariable saved_;

  ~PythonBackward() override {
    // The engine may drop the graph on any thread, and after the interpreter is gone.
    if (Py_IsInitialized()) {
      pybind11::gil_scoped_acquire gil;
      Py_XDECREF(backward_);
      Py_XDECREF(differentiable_backward_);
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
    // The Python C API rather than pybind11's call: this runs once per backward of every op.
    const Py_ssize_t n_args = PyTuple_GET_SIZE(args_);
    PyObject* call_args = PyTuple_New(2 + n_args);
    if (call_args == nullptr) {
      throw python_error();
    }
    PyTuple_SET_ITEM(call_args, 0, THPVariable_Wrap(grads[0]));
    PyTuple_SET_ITEM(call_args, 1, THPVariable_Wrap(saved));
    for (Py_ssize_t i = 0; i < n_args; ++i) {
      PyObject* arg = PyTuple_GET_ITEM(args_, i);
      Py_INCREF(arg);
      PyTuple_SET_ITEM(call_args, 2 + i, arg);
    }
    PyObject* function = at::GradMode::is_enabled() ? differentiable_backward_ : backward_;
    PyObject* result = PyObject_Call(function, call_args, nullptr);
    Py_DECREF(call_args);
    if (result == nullptr) {
      // Keeps the Python exception (its type and traceback) for the caller of backward().
      throw python_error();
    }
    if (!THPVariable_Check(result)) {
      Py_DECREF(result);
      throw std::runtime_error(name_ + ": the backward returned something other than a Tensor");
    }
    at::Tensor grad_input = THPVariable_Unpack(result);
    Py_DECREF(result);
    return {grad_input};
  }

  void release_variables() override {
    saved_.reset_data();
  }
};

// Record `output = op(input)` in the autograd graph: `output`, a fresh tensor that does
// not require grad, gets a PythonBackward node whose next edge is `input`'s gradient
// edge, saving `saved` for the backward: `output` itself, `input`, or another tensor the
// forward made (a gradient computed in the forward, say). The node calls
// `backward(grad_output, saved, *args)`, or `differentiable_backward` with the same
// arguments when grad mode is on in the backward (create_graph=True).
at::Tensor attach(
    const at::Tensor& output,
    const at::Tensor& input,
    const at::Tensor& saved,
    pybind11::object backward,
    pybind11::object differentiable_backward,
    pybind11::tuple args,
    std::string name) {
  TORCH_CHECK(!output.requires_grad(), "attach: the output already requires grad");
  auto node = c10::make_intrusive<PythonBackward>();
  node->name_ = std::move(name);
  node->backward_ = backward.release().ptr();
  node->differentiable_backward_ = differentiable_backward.release().ptr();
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
