#include "core/mapped_file.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <utility>

#include "core/error.h"

namespace dsv4 {

MappedFile MappedFile::open(const std::string& path) {
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) fail("{}: cannot open: {}", path, std::strerror(errno));
  struct stat st {};
  if (fstat(fd, &st) != 0) {
    int e = errno;
    ::close(fd);
    fail("{}: cannot stat: {}", path, std::strerror(e));
  }
  if (!S_ISREG(st.st_mode)) {
    ::close(fd);
    fail("{}: not a regular file", path);
  }
  MappedFile m;
  m.name_ = path;
  m.size_ = (size_t)st.st_size;
  if (m.size_ > 0) {
    void* p = mmap(nullptr, m.size_, PROT_READ, MAP_PRIVATE, fd, 0);
    if (p == MAP_FAILED) {
      int e = errno;
      ::close(fd);
      fail("{}: mmap of {} bytes failed: {}", path, m.size_, std::strerror(e));
    }
    m.data_ = (const uint8_t*)p;
    m.mapped_ = true;
  }
  ::close(fd);
  return m;
}

MappedFile MappedFile::from_bytes(std::vector<uint8_t> bytes, std::string name) {
  MappedFile m;
  m.owned_ = std::make_shared<std::vector<uint8_t>>(std::move(bytes));
  m.data_ = m.owned_->data();
  m.size_ = m.owned_->size();
  m.name_ = std::move(name);
  return m;
}

MappedFile::MappedFile(MappedFile&& o) noexcept {
  *this = std::move(o);
}

MappedFile& MappedFile::operator=(MappedFile&& o) noexcept {
  if (this != &o) {
    if (mapped_ && data_) munmap((void*)data_, size_);
    data_ = std::exchange(o.data_, nullptr);
    size_ = std::exchange(o.size_, 0);
    mapped_ = std::exchange(o.mapped_, false);
    name_ = std::move(o.name_);
    owned_ = std::move(o.owned_);
  }
  return *this;
}

MappedFile::~MappedFile() {
  if (mapped_ && data_) munmap((void*)data_, size_);
}

}  // namespace dsv4
