// Proves the third-party stack links and works together in one binary:
// a libtorch op, RocksDB on disk, and a gRPC server on port 0 answering its
// health check over loopback.
#include <grpcpp/grpcpp.h>
#include <grpcpp/health_check_service_interface.h>
#include <gtest/gtest.h>
#include <rocksdb/db.h>
#include <torch/torch.h>

#include "common/file_util.h"
#include "grpc/health/v1/health.grpc.pb.h"
#include "topiary/v1/job_service.grpc.pb.h"

namespace topiary {
namespace {

TEST(Stack, LibtorchMatmulMatchesHandComputation) {
  auto a = torch::tensor({{1.0f, 2.0f}, {3.0f, 4.0f}});
  auto b = torch::tensor({{5.0f, 6.0f}, {7.0f, 8.0f}});
  auto c = a.matmul(b);
  EXPECT_FLOAT_EQ(c[0][0].item<float>(), 19.0f);
  EXPECT_FLOAT_EQ(c[1][1].item<float>(), 50.0f);
  auto bf = a.to(torch::kBFloat16).matmul(b.to(torch::kBFloat16));
  EXPECT_FLOAT_EQ(bf[1][0].item<float>(), 43.0f);
}

TEST(Stack, RocksDbPutGetSurvivesReopen) {
  auto dir = MakeTempDir("topiary-stack-rocksdb");
  ASSERT_TRUE(dir.ok());
  rocksdb::Options options;
  options.create_if_missing = true;
  {
    rocksdb::DB* db = nullptr;
    ASSERT_TRUE(rocksdb::DB::Open(options, *dir, &db).ok());
    rocksdb::WriteOptions wo;
    wo.sync = true;
    ASSERT_TRUE(db->Put(wo, "job/1", "queued").ok());
    delete db;
  }
  rocksdb::DB* db = nullptr;
  ASSERT_TRUE(rocksdb::DB::Open(options, *dir, &db).ok());
  std::string value;
  ASSERT_TRUE(db->Get(rocksdb::ReadOptions(), "job/1", &value).ok());
  EXPECT_EQ(value, "queued");
  delete db;
  RemoveAll(*dir).IgnoreError();
}

TEST(Stack, GrpcHealthCheckOnPortZero) {
  grpc::EnableDefaultHealthCheckService(true);
  grpc::ServerBuilder builder;
  // gRPC serves health checks only beside at least one synchronous service;
  // the generated JobService base answers UNIMPLEMENTED to every call.
  topiary::v1::JobService::Service job_service;
  builder.RegisterService(&job_service);
  int port = 0;
  builder.AddListeningPort("127.0.0.1:0", grpc::InsecureServerCredentials(), &port);
  auto server = builder.BuildAndStart();
  ASSERT_NE(server, nullptr);
  ASSERT_GT(port, 0);
  auto channel = grpc::CreateChannel("127.0.0.1:" + std::to_string(port),
                                     grpc::InsecureChannelCredentials());
  auto stub = grpc::health::v1::Health::NewStub(channel);
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(10));
  grpc::health::v1::HealthCheckRequest req;
  grpc::health::v1::HealthCheckResponse resp;
  grpc::Status st = stub->Check(&ctx, req, &resp);
  ASSERT_TRUE(st.ok()) << st.error_message();
  EXPECT_EQ(resp.status(), grpc::health::v1::HealthCheckResponse::SERVING);
  server->Shutdown();
}

}  // namespace
}  // namespace topiary
