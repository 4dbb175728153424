#include "runtime/cli/cli_files.h"

#include <fmt/format.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <sstream>

namespace hetmoe::cli {
namespace {

namespace fs = std::filesystem;

Error io_error(const std::string& flag, const std::string& path, const std::string& what) {
  return make_error(ErrorCode::kIo, fmt::format("{} {}: {}", flag, path, what));
}

}  // namespace

Status check_input_file(const std::string& flag, const std::string& path, bool allow_stdin) {
  if (allow_stdin && path == "-") return {};
  if (path.empty()) return make_error(ErrorCode::kInvalidArgument, flag + ": the path is empty");
  struct stat st {};
  if (::stat(path.c_str(), &st) != 0)
    return io_error(flag, path, errno == ENOENT ? "no such file" : std::strerror(errno));
  if (S_ISDIR(st.st_mode)) return io_error(flag, path, "is a directory, not a file");
  if (::access(path.c_str(), R_OK) != 0) return io_error(flag, path, fmt::format("cannot be read: {}", std::strerror(errno)));
  return {};
}

Expected<std::string> read_input_file(const std::string& flag, const std::string& path, bool allow_stdin) {
  HETMOE_RETURN_IF_ERROR(check_input_file(flag, path, allow_stdin));
  std::stringstream ss;
  if (allow_stdin && path == "-") {
    ss << std::cin.rdbuf();
    if (std::cin.bad()) return io_error(flag, "-", "cannot read stdin");
    return ss.str();
  }
  std::ifstream in(path, std::ios::binary);
  if (!in) return io_error(flag, path, fmt::format("cannot open: {}", std::strerror(errno)));
  ss << in.rdbuf();
  if (in.bad()) return io_error(flag, path, "read failed");
  return ss.str();
}

Status check_output_path(const std::string& flag, const std::string& path) {
  if (path.empty()) return make_error(ErrorCode::kInvalidArgument, flag + ": the path is empty");
  struct stat st {};
  if (::stat(path.c_str(), &st) == 0) {
    if (S_ISDIR(st.st_mode)) return io_error(flag, path, "is a directory; give a file name");
    if (::access(path.c_str(), W_OK) != 0) return io_error(flag, path, fmt::format("not writable: {}", std::strerror(errno)));
    return {};
  }
  fs::path dir = fs::path(path).parent_path();
  if (dir.empty()) dir = ".";
  std::error_code ec;
  if (!fs::is_directory(dir, ec))
    return io_error(flag, path, fmt::format("the directory {} does not exist", dir.string()));
  if (::access(dir.c_str(), W_OK | X_OK) != 0)
    return io_error(flag, path, fmt::format("the directory {} is not writable: {}", dir.string(), std::strerror(errno)));
  return {};
}

Expected<std::unique_ptr<OutputFile>> OutputFile::open(const std::string& flag, const std::string& path) {
  HETMOE_RETURN_IF_ERROR(check_output_path(flag, path));
  auto f = std::unique_ptr<OutputFile>(new OutputFile());
  f->flag_ = flag;
  f->path_ = path;
  struct stat st {};
  // lstat: a symbolic link is written through to its target, never replaced by a regular file.
  f->write_through_ = ::lstat(path.c_str(), &st) == 0 && !S_ISREG(st.st_mode);
  if (f->write_through_) {
    f->file_ = std::fopen(path.c_str(), "wb");
    if (!f->file_) return io_error(flag, path, fmt::format("cannot open for writing: {}", std::strerror(errno)));
    return f;
  }
  f->tmp_path_ = path + ".tmp";
  f->file_ = std::fopen(f->tmp_path_.c_str(), "wb");
  if (!f->file_) return io_error(flag, f->tmp_path_, fmt::format("cannot create: {}", std::strerror(errno)));
  return f;
}

Status OutputFile::write(const void* data, size_t num_bytes) {
  if (!file_) return io_error(flag_, path_, "write after close");
  if (num_bytes > 0 && std::fwrite(data, 1, num_bytes, file_) != num_bytes)
    return io_error(flag_, path_, fmt::format("write failed: {}", std::strerror(errno)));
  return {};
}

Status OutputFile::commit() {
  if (!file_) return io_error(flag_, path_, "already closed");
  const bool flush_failed = std::fflush(file_) != 0 || std::ferror(file_);
  const int flush_errno = errno;
  const bool close_failed = std::fclose(file_) != 0;
  file_ = nullptr;
  if (flush_failed || close_failed) {
    if (!tmp_path_.empty()) ::unlink(tmp_path_.c_str());
    tmp_path_.clear();
    return io_error(flag_, path_, fmt::format("write failed: {}", std::strerror(flush_failed ? flush_errno : errno)));
  }
  if (tmp_path_.empty()) return {};
  std::error_code ec;
  fs::rename(tmp_path_, path_, ec);
  if (ec) {
    ::unlink(tmp_path_.c_str());
    tmp_path_.clear();
    return io_error(flag_, path_, fmt::format("rename failed: {}", ec.message()));
  }
  tmp_path_.clear();
  return {};
}

Status write_output_file(const std::string& flag, const std::string& path, const std::string& text) {
  HETMOE_ASSIGN_OR_RETURN(std::unique_ptr<OutputFile> out, OutputFile::open(flag, path));
  HETMOE_RETURN_IF_ERROR(out->write(text.data(), text.size()));
  return out->commit();
}

OutputFile::~OutputFile() {
  if (file_) std::fclose(file_);
  if (!tmp_path_.empty()) ::unlink(tmp_path_.c_str());
}

}  // namespace hetmoe::cli
