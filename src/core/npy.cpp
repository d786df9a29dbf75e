#include "core/npy.h"

#include <unistd.h>

#include <cstdio>
#include <cstring>
#include <fstream>
#include <sstream>

#include "core/error.h"

namespace dsv4 {
namespace {

std::string header_for(const std::vector<int64_t>& shape, const char* dtype) {
  std::string dims;
  for (size_t i = 0; i < shape.size(); ++i) dims += (i ? ", " : "") + std::to_string(shape[i]);
  if (shape.size() == 1) dims += ",";
  std::string s =
      "{'descr': '" + std::string(dtype) + "', 'fortran_order': False, 'shape': (" + dims + "), }";
  const size_t total = 10 + s.size() + 1;  // magic+version+length, header, newline
  s.append((64 - total % 64) % 64, ' ');
  s += '\n';
  return s;
}

void write_npy(const std::string& path, const std::vector<int64_t>& shape, const char* dtype,
               const void* data, size_t elem) {
  size_t n = 1;
  for (auto d : shape) n *= (size_t)d;
  const std::string h = header_for(shape, dtype);
  const std::string tmp = path + ".tmp." + std::to_string(getpid());
  FILE* f = std::fopen(tmp.c_str(), "wb");
  if (!f) fail("{}: cannot create: {}", path, std::strerror(errno));
  const uint16_t hl = (uint16_t)h.size();
  bool ok = std::fwrite("\x93NUMPY\x01\x00", 1, 8, f) == 8 && std::fwrite(&hl, 2, 1, f) == 1 &&
            std::fwrite(h.data(), 1, h.size(), f) == h.size() &&
            (n == 0 || std::fwrite(data, elem, n, f) == n);
  ok = (std::fclose(f) == 0) && ok;
  if (!ok || std::rename(tmp.c_str(), path.c_str()) != 0) {
    std::remove(tmp.c_str());
    fail("{}: write failed", path);
  }
}

}  // namespace

void write_npy_f32(const std::string& path, const std::vector<int64_t>& shape, const float* d) {
  write_npy(path, shape, "<f4", d, 4);
}
void write_npy_i32(const std::string& path, const std::vector<int64_t>& shape, const int32_t* d) {
  write_npy(path, shape, "<i4", d, 4);
}

NpyArray read_npy(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) fail("{}: cannot open", path);
  std::string all((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  if (all.size() < 10 || all.compare(0, 6, "\x93NUMPY") != 0) fail("{}: not a .npy file", path);
  const int major = (unsigned char)all[6];
  size_t hl, off;
  if (major == 1) {
    hl = (unsigned char)all[8] | ((size_t)(unsigned char)all[9] << 8);
    off = 10;
  } else {
    if (all.size() < 12) fail("{}: truncated header", path);
    hl = (unsigned char)all[8] | ((size_t)(unsigned char)all[9] << 8) |
         ((size_t)(unsigned char)all[10] << 16) | ((size_t)(unsigned char)all[11] << 24);
    off = 12;
  }
  if (off + hl > all.size()) fail("{}: truncated header", path);
  const std::string h = all.substr(off, hl);
  NpyArray a;
  auto dpos = h.find("'descr':");
  if (dpos == std::string::npos) fail("{}: header has no descr", path);
  auto q1 = h.find('\'', dpos + 8), q2 = h.find('\'', q1 + 1);
  a.dtype = h.substr(q1 + 1, q2 - q1 - 1);
  if (h.find("'fortran_order': True") != std::string::npos) fail("{}: Fortran order", path);
  auto sp = h.find('(', h.find("'shape':")), se = h.find(')', sp);
  std::stringstream ss(h.substr(sp + 1, se - sp - 1));
  std::string tok;
  size_t n = 1;
  while (std::getline(ss, tok, ','))
    if (tok.find_first_not_of(' ') != std::string::npos) {
      a.shape.push_back(std::stoll(tok));
      n *= (size_t)a.shape.back();
    }
  const char* p = all.data() + off + hl;
  const size_t avail = all.size() - off - hl;
  auto need = [&](size_t b) {
    if (avail < n * b) fail("{}: data truncated ({} of {} bytes)", path, avail, n * b);
  };
  if (a.dtype == "<f4") {
    need(4);
    a.f32.resize(n);
    std::memcpy(a.f32.data(), p, n * 4);
  } else if (a.dtype == "<f8") {
    need(8);
    a.f32.resize(n);
    for (size_t i = 0; i < n; ++i) {
      double d;
      std::memcpy(&d, p + 8 * i, 8);
      a.f32[i] = (float)d;
    }
    a.dtype = "<f4";
  } else if (a.dtype == "<i4") {
    need(4);
    a.i32.resize(n);
    std::memcpy(a.i32.data(), p, n * 4);
  } else if (a.dtype == "<i8") {
    need(8);
    a.i32.resize(n);
    for (size_t i = 0; i < n; ++i) {
      int64_t v;
      std::memcpy(&v, p + 8 * i, 8);
      a.i32[i] = (int32_t)v;
    }
    a.dtype = "<i4";
  } else {
    fail("{}: unsupported dtype '{}'", path, a.dtype);
  }
  return a;
}

}  // namespace dsv4
