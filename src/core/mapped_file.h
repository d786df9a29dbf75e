// A read-only memory mapping of a whole file (or an owned in-memory buffer with the same API).
#pragma once
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

namespace dsv4 {

class MappedFile {
 public:
  // Maps `path` read-only; throws dsv4::Error naming the path and the OS error.
  static MappedFile open(const std::string& path);
  // Wraps bytes already in memory (tests, fuzzing, synthetic models).
  static MappedFile from_bytes(std::vector<uint8_t> bytes, std::string name);

  MappedFile() = default;
  MappedFile(MappedFile&&) noexcept;
  MappedFile& operator=(MappedFile&&) noexcept;
  MappedFile(const MappedFile&) = delete;
  MappedFile& operator=(const MappedFile&) = delete;
  ~MappedFile();

  const uint8_t* data() const { return data_; }
  size_t size() const { return size_; }
  const std::string& name() const { return name_; }

 private:
  const uint8_t* data_ = nullptr;
  size_t size_ = 0;
  bool mapped_ = false;
  std::string name_;
  std::shared_ptr<std::vector<uint8_t>> owned_;
};

}  // namespace dsv4
