// Reading FILE:SHAPE inputs and printing tensors as JSON, shared by scriptserve_run and
// scriptserve_run_aoti.
#pragma once

#include <torch/torch.h>

#include <cstdint>
#include <fstream>
#include <iomanip>
#include <iostream>
#include <sstream>
#include <stdexcept>
#include <string>
#include <vector>

namespace tensor_io {

inline std::vector<int64_t> parse_shape(const std::string& text) {
  std::vector<int64_t> shape;
  std::stringstream in(text);
  std::string dim;
  while (std::getline(in, dim, 'x')) {
    if (dim.empty()) continue;
    shape.push_back(std::stoll(dim));
  }
  return shape;
}

inline torch::Tensor read_input(const std::string& spec) {
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

inline void print_tensor(const torch::Tensor& tensor, std::ostream& os) {
  const torch::Tensor t = tensor.to(torch::kCPU, torch::kDouble).contiguous();
  os << "{\"shape\": [";
  for (int64_t i = 0; i < t.dim(); ++i) os << (i ? ", " : "") << t.size(i);
  os << "], \"data\": [";
  const double* data = t.data_ptr<double>();
  for (int64_t i = 0; i < t.numel(); ++i) os << (i ? ", " : "") << data[i];
  os << "]}";
}

}  // namespace tensor_io

namespace tensor_io {

inline void print_outputs(const std::vector<torch::Tensor>& tensors) {
  std::cout << std::setprecision(17) << "{\"outputs\": [";
  for (size_t i = 0; i < tensors.size(); ++i) {
    if (i) std::cout << ", ";
    print_tensor(tensors[i], std::cout);
  }
  std::cout << "]}" << std::endl;
}

}  // namespace tensor_io
