# torchvision's trained ssdlite320_mobilenet_v3_large (COCO; 21.3 box mAP on
# val2017 in torchvision's table) as an mmdet detector of our modules. Its
# weights come from tools/model_converters/torchvision_models2mbn.py; this
# config carries everything else the model assumes, so that the converted
# detector gives torchvision's detections (tests/test_torchvision_models.py).
_base_ = '../ssdlite/ssdlite_mobilenetv3-large-reduced-tail_8xb24-600e_coco.py'

input_size = _base_.input_size
# torchvision's anchors: (cx, cy) = (i + 0.5) * input_size / f for a level
# of f x f cells; at 320: 20, 10, 5, 3, 2, 1 cells, so the fourth level's
# cells are 320 / 3 pixels wide, not the 107 of the base config
feature_sizes = (20, 10, 5, 3, 2, 1)
anchor_strides = tuple(input_size / f for f in feature_sizes)
# Its 91 outputs: the background, then COCO's label map ids 1-90 (ten ids
# unused); mmdet's 80 classes, in CocoDataset's order, are these ids.
coco_category_ids = (
    1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22, 23, 24, 25,
    27, 28, 31, 32, 33, 34, 35, 36, 37, 38, 39, 40, 41, 42, 43, 44, 46, 47, 48, 49, 50, 51,
    52, 53, 54, 55, 56, 57, 58, 59, 60, 61, 62, 63, 64, 65, 67, 70, 72, 73, 74, 75, 76, 77,
    78, 79, 80, 81, 82, 84, 85, 86, 87, 88, 89, 90)

model = dict(
    # torchvision scales the [0, 1] image to [-1, 1] (image_mean = image_std = 0.5)
    data_preprocessor=dict(mean=[127.5, 127.5, 127.5], std=[127.5, 127.5, 127.5]),
    # the base's backbone: reduced tail, BN eps 1e-3 and momentum 0.03, as
    # torchvision's (its COCO model starts from no ImageNet weights)
    bbox_head=dict(
        raw_classes=91,
        class_indices=coco_category_ids,
        # six boxes on every level, the lowest too (the TF API's SSDLite: three)
        anchor_generator=dict(
            _delete_=True,
            type='mbn_backbones.DefaultBoxGenerator',
            input_size=input_size,
            strides=anchor_strides,
            aspect_ratios=[[2, 3]] * len(feature_sizes),
            min_ratio=0.2,
            max_ratio=0.95,
            clip=True),
        # torchvision's BoxCoder weights (10, 10, 5, 5) are these stds' inverses
        bbox_coder=dict(target_means=[0., 0., 0., 0.], target_stds=[0.1, 0.1, 0.2, 0.2])),
    # torchvision's SSD post-processing: per class the 300 best boxes above
    # 0.001, NMS at IoU 0.55 per class, the 300 best detections
    test_cfg=dict(
        _delete_=True,
        score_thr=0.001,
        topk_per_class=300,
        nms=dict(type='nms', iou_threshold=0.55),
        max_per_img=300))

# torchvision resizes the float image to 320x320 (bilinear, ratio not kept);
# loading it as float32 makes cv2 resize without rounding to uint8
test_pipeline = [
    dict(type='LoadImageFromFile', to_float32=True, backend_args=_base_.backend_args),
    dict(type='Resize', scale=(input_size, input_size), keep_ratio=False),
    dict(type='LoadAnnotations', with_bbox=True),
    dict(type='PackDetInputs',
         meta_keys=('img_id', 'img_path', 'ori_shape', 'img_shape', 'scale_factor')),
]
val_dataloader = dict(dataset=dict(pipeline=test_pipeline))
test_dataloader = val_dataloader
