// Run a TorchScript archive downloaded from ScriptServe, without Python.
//
//   scriptserve_run ARCHIVE INPUT [INPUT...]
//
// Each INPUT is FILE:SHAPE, FILE holding raw little-endian float32 values in row-major
// order and SHAPE the dimensions joined by 'x' (e.g. x.bin:2x320). The outputs are printed
// as one JSON object: {"outputs": [{"shape": [...], "data": [...]}, ...]}, a tuple or list
// output giving one entry per element, a dict output one per value (in key order).
#include <torch/script.h>

#include <cstdint>
#include <fstream>
#include <iomanip>
#include <iostream>
#include <sstream>
#include <stdexcept>
#include <string>
#include <vector>

namespace {

std::vector<int64_t> parse_shape(const std::string& text) {
  std::vector<int64_t> shape;
  std::stringstream in(text);
  std::string dim;
  while (std::getline(in, dim, 'x')) {
    if (dim.empty()) continue;
    shape.push_back(std::stoll(dim));
  }
  return shape;
}

torch::Tensor read_input(const std::string& spec) {
  const auto colon = spec.rfind(':');
  if (colon == std::string::npos) {
    throw std::invalid_argument("input '" + spec + "' is not FILE:SHAPE");
  }
  const std::string path = spec.substr(0, colon);
  const std::vector<int64_t> shape = parse_shape(spec.substr(colon + 1));
  int64_t count = 1;
  for (int64_t d : shape) count *= d;
  std::ifstream file(path, std::ios::binary | std::ios::ate);
  if (!file) throw std::invalid_argument("cannot open " + path);
  const auto bytes = static_cast<int64_t>(file.tellg());
  if (bytes != count * static_cast<int64_t>(sizeof(float))) {
    throw std::invalid_argument(path + " holds " + std::to_string(bytes) + " bytes, shape needs " +
                                std::to_string(count * sizeof(float)));
  }
  std::vector<float> values(count);
  file.seekg(0);
  file.read(reinterpret_cast<char*>(values.data()), bytes);
  return torch::from_blob(values.data(), shape, torch::kFloat32).clone();
}

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

void print_tensor(const torch::Tensor& tensor, std::ostream& os) {
  const torch::Tensor t = tensor.to(torch::kCPU, torch::kDouble).contiguous();
  os << "{\"shape\": [";
  for (int64_t i = 0; i < t.dim(); ++i) os << (i ? ", " : "") << t.size(i);
  os << "], \"data\": [";
  const double* data = t.data_ptr<double>();
  for (int64_t i = 0; i < t.numel(); ++i) os << (i ? ", " : "") << data[i];
  os << "]}";
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
    std::cout << std::setprecision(17) << "{\"outputs\": [";
    for (size_t i = 0; i < tensors.size(); ++i) {
      if (i) std::cout << ", ";
      print_tensor(tensors[i], std::cout);
    }
    std::cout << "]}" << std::endl;
  } catch (const std::exception& e) {
    std::cerr << "error: " << e.what() << "\n";
    return 1;
  }
  return 0;
}
