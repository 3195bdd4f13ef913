// Run an AOTInductor package (.pt2) downloaded from ScriptServe, without Python.
//
//   scriptserve_run_aoti PACKAGE INPUT [INPUT...]
//
// INPUT and the printed JSON are as for scriptserve_run (tensor_io.h). The package's native
// library is loaded by libtorch's AOTIModelPackageLoader; it must have been compiled for this
// machine's platform and for the CPU (ScriptServe's format=aoti compiles on the server).
#include <torch/csrc/inductor/aoti_package/model_package_loader.h>
#include <torch/torch.h>

#include "tensor_io.h"

#include <iostream>
#include <vector>

int main(int argc, char** argv) {
  if (argc < 3) {
    std::cerr << "usage: " << argv[0] << " PACKAGE FILE:SHAPE [FILE:SHAPE...]\n";
    return 2;
  }
  try {
    torch::inductor::AOTIModelPackageLoader loader(argv[1]);
    std::vector<torch::Tensor> inputs;
    for (int i = 2; i < argc; ++i) inputs.push_back(tensor_io::read_input(argv[i]));
    c10::InferenceMode guard;
    tensor_io::print_outputs(loader.run(inputs));
  } catch (const std::exception& e) {
    std::cerr << "error: " << e.what() << "\n";
    return 1;
  }
  return 0;
}
