// A C++ autograd node whose backward calls a Python function: the eager autograd path of
// fused_ops' ops with one output (activations, softmax, log_softmax, cross-entropy whose
// logits alone require grad, linear cross-entropy).
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
  // backward_(grad_output, *saved, *args) -> grad_input, and the same recorded by autograd
  // (for create_graph=True); args_ is a tuple. Owned references.
  PyObject* backward_ = nullptr;
  PyObject* differentiable_backward_ = nullptr;
  PyObject* args_ = nullptr;
  // One or more saved tensors (an undefined one is passed to the backward as None).
  std::vector<SavedVariable> saved_;
  // Inputs given as a tuple: the backward returns a tuple of gradients (None for none),
  // one per input. Otherwise one input, and the backward returns its gradient.
  bool tuple_of_inputs_ = false;

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
      return variable_list(num_outputs());
    }
    pybind11::gil_scoped_acquire gil;
    // The Python C API rather than pybind11's call: this runs once per backward of every op.
    const Py_ssize_t n_saved = static_cast<Py_ssize_t>(saved_.size());
    const Py_ssize_t n_args = PyTuple_GET_SIZE(args_);
    PyObject* call_args = PyTuple_New(1 + n_saved + n_args);
    if (call_args == nullptr) {
      throw python_error();
    }
    PyTuple_SET_ITEM(call_args, 0, THPVariable_Wrap(grads[0]));
    for (Py_ssize_t i = 0; i < n_saved; ++i) {
      // Raises torch's "backward through the graph a second time" error once released,
      // and the in-place error if a saved tensor was modified.
      at::Tensor saved;
      try {
        saved = saved_[i].unpack(getptr());
      } catch (...) {
        Py_DECREF(call_args);
        throw;
      }
      // THPVariable_Wrap gives None for an undefined tensor.
      PyTuple_SET_ITEM(call_args, 1 + i, THPVariable_Wrap(saved));
    }
    for (Py_ssize_t i = 0; i < n_args; ++i) {
      PyObject* arg = PyTuple_GET_ITEM(args_, i);
      Py_INCREF(arg);
      PyTuple_SET_ITEM(call_args, 1 + n_saved + i, arg);
    }
    PyObject* function = at::GradMode::is_enabled() ? differentiable_backward_ : backward_;
    PyObject* result = PyObject_Call(function, call_args, nullptr);
    Py_DECREF(call_args);
    if (result == nullptr) {
      // Keeps the Python exception (its type and traceback) for the caller of backward().
      throw python_error();
    }
    if (!tuple_of_inputs_) {
      if (!THPVariable_Check(result)) {
        Py_DECREF(result);
        throw std::runtime_error(name_ + ": the backward returned something other than a Tensor");
      }
      at::Tensor grad_input = THPVariable_Unpack(result);
      Py_DECREF(result);
      return {grad_input};
    }
    const Py_ssize_t n_inputs = static_cast<Py_ssize_t>(num_outputs());
    if (!PyTuple_Check(result) || PyTuple_GET_SIZE(result) != n_inputs) {
      Py_DECREF(result);
      throw std::runtime_error(
          name_ + ": the backward must return a tuple of " + std::to_string(n_inputs) + " gradients or Nones");
    }
    variable_list grad_inputs(n_inputs);
    for (Py_ssize_t i = 0; i < n_inputs; ++i) {
      PyObject* grad = PyTuple_GET_ITEM(result, i);
      if (grad == Py_None) {
        continue;
      }
      if (!THPVariable_Check(grad)) {
        Py_DECREF(result);
        throw std::runtime_error(name_ + ": the backward returned something other than a Tensor or None");
      }
      grad_inputs[i] = THPVariable_Unpack(grad);
    }
    Py_DECREF(result);
    return grad_inputs;
  }

  void release_variables() override {
    for (auto& saved : saved_) {
      saved.reset_data();
    }
  }
};

// A tensor, or a tuple of tensors and Nones, as tensors (an undefined one for None).
std::vector<at::Tensor> tensors_of(pybind11::handle object, const char* what) {
  std::vector<at::Tensor> tensors;
  if (THPVariable_Check(object.ptr())) {
    tensors.push_back(THPVariable_Unpack(object.ptr()));
    return tensors;
  }
  TORCH_CHECK_TYPE(PyTuple_Check(object.ptr()), "attach: ", what, " must be a Tensor or a tuple of Tensors and Nones");
  const Py_ssize_t size = PyTuple_GET_SIZE(object.ptr());
  for (Py_ssize_t i = 0; i < size; ++i) {
    PyObject* item = PyTuple_GET_ITEM(object.ptr(), i);
    if (item == Py_None) {
      tensors.emplace_back();
    } else {
      TORCH_CHECK_TYPE(THPVariable_Check(item), "attach: ", what, " must be a Tensor or a tuple of Tensors and Nones");
      tensors.push_back(THPVariable_Unpack(item));
    }
  }
  return tensors;
}

// Record `output = op(input)` in the autograd graph: `output`, a fresh tensor that does
// not require grad, gets a PythonBackward node whose next edges are the gradient edges
// of `input` (a tensor, or a tuple of tensors and Nones: then the backward returns a
// tuple of gradients), saving `saved` for the backward: a tensor (`output` itself,
// `input`, or another tensor the forward made), or a tuple of tensors and Nones. The
// node calls `backward(grad_output, *saved, *args)`, or `differentiable_backward` with
// the same arguments when grad mode is on in the backward (create_graph=True).
// attach(output, input, saved, backward, differentiable_backward, args, name) -> output.
// A METH_FASTCALL function of the Python C API rather than a pybind11 binding: it runs in
// every forward of every op, and pybind11's argument conversion (seven arguments, a
// std::string) cost about as much as the rest of the call.
PyObject* attach(PyObject* /*module*/, PyObject* const* arguments, Py_ssize_t n_arguments) {
  HANDLE_TH_ERRORS
  TORCH_CHECK_TYPE(
      n_arguments == 7, "attach(output, input, saved, backward, differentiable_backward, args, name) takes 7 arguments");
  PyObject* output_object = arguments[0];
  PyObject* input = arguments[1];
  PyObject* saved = arguments[2];
  PyObject* args = arguments[5];
  TORCH_CHECK_TYPE(THPVariable_Check(output_object), "attach: output must be a Tensor");
  TORCH_CHECK_TYPE(PyTuple_Check(args), "attach: args must be a tuple");
  TORCH_CHECK_TYPE(PyUnicode_Check(arguments[6]), "attach: name must be a str");
  const at::Tensor& output = THPVariable_Unpack(output_object);
  TORCH_CHECK(!output.requires_grad(), "attach: the output already requires grad");
  const std::vector<at::Tensor> inputs = tensors_of(input, "input");
  const std::vector<at::Tensor> to_save = tensors_of(saved, "saved");
  Py_ssize_t name_size = 0;
  const char* name = PyUnicode_AsUTF8AndSize(arguments[6], &name_size);
  if (name == nullptr) {
    return nullptr;
  }
  auto node = c10::make_intrusive<PythonBackward>();
  node->name_.assign(name, name_size);
  node->tuple_of_inputs_ = !THPVariable_Check(input);
  Py_INCREF(arguments[3]);
  node->backward_ = arguments[3];
  Py_INCREF(arguments[4]);
  node->differentiable_backward_ = arguments[4];
  Py_INCREF(args);
  node->args_ = args;
  node->set_next_edges(torch::autograd::collect_next_edges(inputs));
  torch::autograd::set_history(output, node);
  // After set_history, so that a saved output knows this node is its grad_fn and is
  // stored without a reference cycle (as torch's own nodes save their results).
  node->saved_.reserve(to_save.size());
  for (const auto& tensor : to_save) {
    const bool is_output = tensor.defined() && tensor.is_same(output);
    node->saved_.emplace_back(is_output ? output : tensor, is_output);
  }
  Py_INCREF(output_object);
  return output_object;
  END_HANDLE_TH_ERRORS
}

PyMethodDef attach_method = {
    "attach",
    reinterpret_cast<PyCFunction>(reinterpret_cast<void (*)()>(attach)),
    METH_FASTCALL,
    "Record output = op(input) in the autograd graph with a Python backward."};

}  // namespace

PYBIND11_MODULE(TORCH_EXTENSION_NAME, module) {
  module.add_object("attach", pybind11::reinterpret_steal<pybind11::object>(PyCFunction_New(&attach_method, nullptr)));
}
