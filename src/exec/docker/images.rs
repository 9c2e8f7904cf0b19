//! Images: the local list, a pull (anonymous: no registry credentials are sent) and what id a
//! reference names on the engine.

use bollard::errors::Error as BollardError;
use futures::StreamExt;

use super::containers::{nonempty, short_id};
use super::engine::Docker;
use super::model::{ImageInfo, PullResult};
use super::refs::ImageRef;
use crate::exec::ExecError;

impl Docker {
    /// Local images, newest first.
    pub async fn images(&self) -> Result<Vec<ImageInfo>, ExecError> {
        self.bounded(async {
            let client = self.client().await?;
            let options = bollard::query_parameters::ListImagesOptionsBuilder::new().build();
            let raw = client
                .list_images(Some(options))
                .await
                .map_err(|e| self.map_err(e, None))?;
            let mut out: Vec<(i64, ImageInfo)> = raw
                .into_iter()
                .map(|i| {
                    let mut tags: Vec<String> = i.repo_tags.into_iter().filter(|t| t != "<none>:<none>").collect();
                    tags.sort();
                    let mut digests: Vec<String> =
                        i.repo_digests.into_iter().filter(|d| d != "<none>@<none>").collect();
                    digests.sort();
                    let info = ImageInfo {
                        id: short_image_id(&i.id),
                        tags,
                        digests,
                        created: crate::when::rfc3339(i.created),
                        size_bytes: u64::try_from(i.size).unwrap_or(0),
                        containers: u64::try_from(i.containers).ok(),
                    };
                    (i.created, info)
                })
                .collect();
            out.sort_by(|a, b| b.0.cmp(&a.0).then_with(|| a.1.tags.cmp(&b.1.tags)));
            Ok(out.into_iter().map(|(_, i)| i).collect())
        })
        .await
    }

    /// Pulls `image` from its registry (anonymously: no registry credentials are sent).
    pub async fn pull(&self, image: &ImageRef) -> Result<PullResult, ExecError> {
        self.bounded(async {
            let client = self.client().await?;
            let reference = image.reference();
            let before = self.image_id(client, &reference).await?;
            let status = self.pull_stream(client, image).await?;
            let after = self.image_id(client, &reference).await?.ok_or_else(|| {
                ExecError::Failed(format!(
                    "the engine reported the pull of `{reference}` done but has no such image"
                ))
            })?;
            Ok(PullResult {
                image: reference,
                changed: before.as_deref() != Some(after.as_str()),
                image_id_before: before,
                image_id_after: after,
                status,
            })
        })
        .await
    }

    /// The id (`sha256:…`) `image` names on the engine now; `None` when it has no such image.
    pub async fn image_id_of(&self, image: &ImageRef) -> Result<Option<String>, ExecError> {
        self.bounded(async {
            let client = self.client().await?;
            self.image_id(client, &image.reference()).await
        })
        .await
    }

    /// The id (`sha256:…`) `reference` names on the engine, `None` when it has no such image.
    pub(super) async fn image_id(
        &self,
        client: &bollard::Docker,
        reference: &str,
    ) -> Result<Option<String>, ExecError> {
        match client.inspect_image(reference).await {
            Ok(i) => Ok(i.id),
            Err(BollardError::DockerResponseServerError { status_code: 404, .. }) => Ok(None),
            Err(e) => Err(self.map_err(e, None)),
        }
    }

    /// Runs a pull to its end; returns the last status line. A registry failure is an error
    /// naming the reference.
    pub(super) async fn pull_stream(
        &self,
        client: &bollard::Docker,
        image: &ImageRef,
    ) -> Result<Option<String>, ExecError> {
        let options = bollard::query_parameters::CreateImageOptionsBuilder::new()
            .from_image(&image.name)
            .tag(&image.tag)
            .build();
        let mut stream = client.create_image(Some(options), None, None);
        let mut last = None;
        while let Some(item) = stream.next().await {
            match item {
                Ok(info) => {
                    if let Some(s) = nonempty(info.status) {
                        last = Some(s);
                    }
                }
                Err(BollardError::DockerStreamError { error }) => {
                    return Err(ExecError::Failed(format!(
                        "pull of `{}` failed: {}",
                        image.reference(),
                        error.trim()
                    )));
                }
                Err(BollardError::DockerResponseServerError { message, status_code }) => {
                    return Err(ExecError::Failed(format!(
                        "pull of `{}` failed: {} (HTTP {status_code})",
                        image.reference(),
                        message.trim()
                    )));
                }
                Err(e) => return Err(self.map_err(e, None)),
            }
        }
        Ok(last)
    }
}

fn short_image_id(id: &str) -> String {
    let hex = id.strip_prefix("sha256:").unwrap_or(id);
    format!("sha256:{}", short_id(hex))
}
