// Realistic wire (snake_case JSON) samples of an offer and a job, shared by the entity tests.

export const offerWire = {
  backend: "aws",
  region: "us-east-1",
  price: 32.77,
  instance: {
    name: "p4d.24xlarge",
    resources: {
      cpus: 96,
      memory_mib: 1179648,
      gpus: Array.from({ length: 8 }, () => ({ name: "A100", memory_mib: 40960, vendor: "nvidia" })),
      spot: false,
      disk: { size_mib: 102400 },
      cpu_arch: "x86",
      description: "96xCPU, 1152GB, 8xA100 (40GB), 100.0GB (disk)"
    }
  },
  availability: "available",
  availability_zones: ["us-east-1a", "us-east-1b"]
}

export const jobWire = {
  job_spec: {
    job_name: "train-0-0",
    replica_num: 0,
    job_num: 0,
    jobs_per_replica: 2,
    commands: ["pip install -r requirements.txt", "python train.py"],
    entrypoint: null,
    env: { HF_TOKEN: "x", DSTACK_RUN_NAME: "train" },
    image_name: "dstackai/base:py3.12-0.7-cuda-12.1",
    user: "1000:1000",
    privileged: false,
    working_dir: "/workflow",
    max_duration: 7200,
    stop_duration: 300,
    registry_auth: { username: "bot", password: "secret" },
    requirements: {
      resources: { cpu: "4..", memory: "16GB..", gpu: "A100:40GB:8", disk: "100GB.." },
      max_price: 40,
      spot: null,
      reservation: null
    },
    retry: { on_events: ["no-capacity", "error"], duration: 3600 },
    volumes: [{ name: "data", path: "/data" }, { instance_path: "/mnt/cache", path: "/cache" }],
    app_specs: [{ port: 6006, map_to_port: 6006, app_name: "tensorboard", url_path: "/" }],
    shm_size: 8,
    repo_code_hash: "ab12cd",
    repo_data: {
      repo_type: "remote",
      repo_url: "https://github.com/dstackai/dstack-examples",
      repo_branch: "main",
      repo_hash: "0123456789abcdef"
    }
  },
  job_submissions: [
    {
      id: "7e0d1a6e-0000-4000-8000-000000000001",
      submission_num: 0,
      submitted_at: "2025-01-01T10:00:00.000Z",
      last_processed_at: "2025-01-01T10:05:00.000Z",
      finished_at: "2025-01-01T10:05:00.000Z",
      status: "failed",
      termination_reason: "interrupted_by_no_capacity",
      job_provisioning_data: {
        backend: "aws",
        instance_type: offerWire.instance,
        instance_id: "i-0abc",
        hostname: "3.4.5.6",
        internal_ip: "10.0.0.5",
        region: "us-east-1",
        price: 12.5,
        username: "ubuntu",
        ssh_port: 22,
        dockerized: true
      },
      instance_id: "inst-1"
    },
    {
      id: "7e0d1a6e-0000-4000-8000-000000000002",
      submission_num: 1,
      submitted_at: "2025-01-01T10:06:00.000Z",
      last_processed_at: "2025-01-01T10:06:01.000Z",
      status: "submitted"
    }
  ]
}
