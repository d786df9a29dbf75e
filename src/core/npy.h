// NumPy .npy files (format 1.0, little-endian, C order): float32 and int32 arrays, for logits
// dumps and golden data.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

namespace dsv4 {

struct NpyArray {
  std::vector<int64_t> shape;
  std::string dtype;         // "<f4" or "<i4"
  std::vector<float> f32;    // when dtype == "<f4"
  std::vector<int32_t> i32;  // when dtype == "<i4"
};

// Writes atomically (temp file + rename); throws naming the path on failure.
void write_npy_f32(const std::string& path, const std::vector<int64_t>& shape, const float* data);
void write_npy_i32(const std::string& path, const std::vector<int64_t>& shape, const int32_t* data);
// Reads <f4, <i4 (and <f8/<i8 converted); throws naming the path and the problem.
NpyArray read_npy(const std::string& path);

}  // namespace dsv4
