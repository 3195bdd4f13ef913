// Run a TorchScript archive downloaded from ScriptServe, without Python.
//
//   scriptserve_run ARCHIVE INPUT [INPUT...]
//
// Each INPUT is FILE:SHAPE, FILE holding raw little-endian float32 values in row-major
// order and SHAPE the dimensions joined by 'x' (e.g. x.bin:2x320). The outputs are printed
// as one JSON object: {"outputs": [{"shape": [...], "data": [...]}, ...]}, a tuple or list
// output giving one entry per element, a dict output one per value (in key order).
#include <torch/script.h>

#include "tensor_io.h"

#include <cstdint>
#include <fstream>
#include <iomanip>
#include <iostream>
#include <sstream>
#include <stdexcept>
#include <string>
#include <vector>

namespace {

using tensor_io::read_input;

void collect(const c10::IValue& value, std::vector<torch::Tensor>& out) {
  if (value.isTensor()) {
    out.push_back(value.toTensor());
  } else if (value.isTuple()) {
    for (const auto& element : value.toTupleRef().elements()) collect(element, out);
  } else if (value.isList()) {
    for (const auto& element : value.toListRef()) collect(element, out);
  } else if (value.isGenericDict()) {
    for (const auto& item : value.toGenericDict()) collect(item.value(), out);
  } else {
    throw std::runtime_error("unsupported output type " + value.tagKind());
  }
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 3) {
    std::cerr << "usage: " << argv[0] << " ARCHIVE FILE:SHAPE [FILE:SHAPE...]\n";
    return 2;
  }
  try {
    torch::jit::script::Module module = torch::jit::load(argv[1]);
    module.eval();
    std::vector<torch::jit::IValue> inputs;
    for (int i = 2; i < argc; ++i) inputs.emplace_back(read_input(argv[i]));
    c10::InferenceMode guard;
    const c10::IValue output = module.forward(inputs);
    std::vector<torch::Tensor> tensors;
    collect(output, tensors);
    tensor_io::print_outputs(tensors);
  } catch (const std::exception& e) {
    std::cerr << "error: " << e.what() << "\n";
    return 1;
  }
  return 0;
}
